"""`tuneforge export`: merge the adapter, write a Hugging Face folder or a GGUF file, never half of one.

Read `run_export` top to bottom: check → merge → write into a hidden sibling folder → rename.
Every check runs before the base model loads. The export is assembled in a temporary folder
next to --out and renamed into place only when complete, so a crash, a full disk or Ctrl-C
leaves either the old folder or the new one, never a file llama.cpp would choke on.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from tuneforge.export.checks import ExportPlan, check_output, plan_export, stored_dtype


def run_export(
    adapter: Path = Path("results"),
    out: Path = Path("exported"),
    fmt: str = "gguf",
    quant: str | None = None,
    overwrite: bool = False,
    model: str | None = None,
    checksums: bool = True,
    ollama: str | None = None,
) -> Path:
    """Export and return the path of the main artefact (the folder for hf, the .gguf file for gguf).

    ollama: a model name to `ollama create` from the finished GGUF (or the command, without Ollama).
    """
    from tuneforge.runs.lock import holding

    plan = plan_export(adapter, out, fmt, quant, overwrite, model, checksums)
    with holding(plan.out, what="export folder", fix="export somewhere else with --out"):  # one writer per --out
        check_output(plan.out, plan.adapter, overwrite)  # again: an export that just finished there counts
        return _export(plan, fmt, ollama)


def _export(plan: ExportPlan, fmt: str, ollama: str | None = None) -> Path:
    from tuneforge.disk_faults import writing
    from tuneforge.export.ollama import check_request

    check_request(ollama, fmt)  # a bad name fails before the weights load, not after the export
    console = Console(highlight=False, soft_wrap=True)  # soft wrap: printed commands stay copy-pasteable
    kind = f"{fmt} {plan.quant}" if plan.quant else fmt
    console.print(f"Exporting {plan.adapter} (base: {plan.source.description}) as {kind}.")
    from tuneforge.export.merge import load_merged
    from tuneforge.runs.folder import is_full_model

    merged, tokenizer = load_merged(plan.adapter, plan.source)
    if not is_full_model(plan.adapter):
        console.print("Adapter merged into the base weights (peft merge_and_unload).")
    # a full disk: one paragraph, and the hidden half-written folder is removed on the way out
    with writing(f"the {kind} export", plan.out.parent), staged_folder(plan.out) as staging:
        write = write_hf if fmt == "hf" else write_gguf_export
        files = write(plan, merged, tokenizer, staging)
        from tuneforge.export.model_card import write_export_card

        write_export_card(staging, plan.out, plan.adapter, plan.run_config, plan.source, files)
    show_next_steps(console, plan, files, ollama)
    if ollama:  # the export is complete and in place: Ollama failing can't cost it
        from tuneforge.export.ollama import create_in_ollama

        create_in_ollama(ollama, plan.out, console.print)
    return plan.out / files["file"] if fmt == "gguf" else plan.out


def export_name(plan: ExportPlan) -> str:
    """'smollm2-135m-tuned': lower-case, safe for a file name and an Ollama model name."""
    stem = Path(plan.source.name.rstrip("/")).name.lower()
    return re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-.") + "-tuned"


def write_hf(plan: ExportPlan, merged: Any, tokenizer: Any, folder: Path) -> dict[str, str]:
    from tuneforge.export.merge import save_hf

    save_hf(merged, tokenizer, folder, stored_dtype(plan.base_config))
    return {"format": "hf", "file": "model.safetensors"}


def write_gguf_export(plan: ExportPlan, merged: Any, tokenizer: Any, folder: Path) -> dict[str, str]:
    from tuneforge.export.gguf_writer import write_gguf
    from tuneforge.export.modelfile import build_modelfile

    name = export_name(plan)
    file_name = f"{name}-{plan.quant}.gguf"
    count = write_gguf(
        merged, tokenizer, plan.adapter, folder / file_name, plan.quant or "f16", name, plan.pre_tokenizer
    )
    check_readable(folder / file_name, count)
    (folder / "Modelfile").write_text(build_modelfile(file_name, tokenizer, name), encoding="utf-8")
    return {"format": "gguf", "quant": plan.quant or "f16", "file": file_name, "ollama": name}


def check_readable(path: Path, expected_tensors: int) -> None:
    """Parse the finished file back with gguf's reader: a truncated write fails here, before the rename."""
    from gguf import GGUFReader

    found = len(GGUFReader(path).tensors)
    if found != expected_tensors:
        raise RuntimeError(f"{path} holds {found} tensors, {expected_tensors} were written")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden sibling folder to write into; renamed to `out` only if the block finishes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: mkdtemp's 0700 mode would survive the rename and lock others out of the export.
    staging = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        yield staging
        swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def swap_in(staging: Path, out: Path) -> None:
    """Replace `out` by `staging` with renames; the old export is deleted only once the new one is in place."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / out.name)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def show_next_steps(console: Console, plan: ExportPlan, files: dict[str, str], ollama: str | None = None) -> None:
    console.print(f"Export written to {plan.out}: {', '.join(sorted(p.name for p in plan.out.iterdir()))}")
    share = f"Share it:            tuneforge push --export {plan.out} --repo your-name/{export_name(plan)}"
    if files["format"] == "hf":
        console.print(f'Load it with: AutoModelForCausalLM.from_pretrained("{plan.out}")')
        console.print(share)
        return
    console.print(f"Run it in llama.cpp: llama-cli -m {plan.out / files['file']} -cnv")
    if not ollama:  # with --ollama, export/ollama.py creates it (or prints the command) next
        console.print(f"Add it to Ollama:    ollama create {files['ollama']} -f {plan.out / 'Modelfile'}")
        console.print(f"Then chat:           ollama run {files['ollama']}")
    console.print(share)
