"""Everything `export` refuses, checked in seconds before any weights load or any byte is written."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.models.loading import ModelSource

FORMATS = ("hf", "gguf")
EXTRA_BYTES = 64 * 1024**2  # tokenizer, metadata, model card, and room to spare
BYTES_PER_PARAM = {"f16": 2.0, "q8_0": 34 / 32}  # a q8_0 block: 32 int8 values and one f16 scale
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass
class ExportPlan:
    adapter: Path
    out: Path
    fmt: str
    quant: str | None
    source: ModelSource
    base_config: Any
    run_config: dict[str, Any] = field(default_factory=dict)
    pre_tokenizer: str = ""


def plan_export(
    adapter: Path, out: Path, fmt: str, quant: str | None, overwrite: bool, model: str | None, checksums: bool = True
) -> ExportPlan:
    from tuneforge.export.gguf_tokenizer import pre_tokenizer_name
    from tuneforge.runs.folder import base_model_for, check_folder, read_run_config

    quant = check_format(fmt, quant)
    check_folder(adapter.expanduser(), checksums)  # damage is named (with the way back) before any weights load
    adapter, out = check_results_folder(adapter), out.expanduser()
    check_output(out, adapter, overwrite)
    run_config = read_run_config(adapter)
    source = base_model_for(adapter, run_config, model)  # the one rule, shared with chat, eval, serve
    config = base_config(source)
    plan = ExportPlan(adapter, out, fmt, quant, source, config, run_config)
    if fmt == "gguf":
        check_gguf_architecture(config)
        plan.pre_tokenizer = pre_tokenizer_name(adapter / "tokenizer.json")
    check_disk(out, estimated_bytes(plan))
    return plan


def check_format(fmt: str, quant: str | None) -> str | None:
    from tuneforge.export.gguf_writer import QUANTS

    if fmt not in FORMATS:
        raise UserError(
            f"--format '{fmt}' is not one of {', '.join(FORMATS)}. "
            "Use hf for a merged model folder, gguf for llama.cpp and Ollama."
        )
    if fmt == "hf":
        if quant is not None:
            raise UserError(
                f"--quant {quant} applies to --format gguf only; an hf export keeps the base model's dtype."
            )
        return None
    if (quant or "f16") not in QUANTS:
        raise UserError(
            f"--quant '{quant}' is not one of {', '.join(QUANTS)}. f16 keeps the tuned model closest, q8_0 is half the size."
        )
    return quant or "f16"


def check_results_folder(adapter: Path) -> Path:
    from tuneforge.runs.folder import weight_files

    adapter = adapter.expanduser()
    needed = (*weight_files(adapter), "tokenizer.json")
    missing = [name for name in needed if not (adapter / name).is_file()]
    if missing:
        raise UserError(
            f"--adapter '{adapter}' is not a finished training run: {', '.join(missing)} missing. "
            "Point --adapter at the results folder of `tuneforge train` (default: results)."
        )
    return adapter


def check_output(out: Path, adapter: Path, overwrite: bool) -> None:
    if out.resolve() == adapter.resolve() or out.resolve() in adapter.resolve().parents:
        raise UserError(
            f"--out '{out}' holds the adapter folder '{adapter}'; exporting there would replace it. Choose another --out."
        )
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file, not a folder. Choose a folder name for the export.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"The export folder '{out}' is not empty. Choose a new --out, or pass --overwrite to replace what is in it."
        )
    parent = _existing_ancestor(out.parent)
    if not os.access(parent, os.W_OK):
        raise UserError(f"Can't write in '{parent}', where --out '{out}' would go. Choose a folder you own with --out.")


def base_config(source: ModelSource) -> Any:
    """The base model's config (config.json only: no weights load here)."""
    from transformers import AutoConfig

    from tuneforge.models.loading import model_path

    path = model_path(source)
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise UserError(f"Could not read the config of base model '{source.name}': {first}") from None


def check_gguf_architecture(config: Any) -> None:
    from tuneforge.export.gguf_writer import unsupported_reason

    reason = unsupported_reason(config)
    if reason:
        raise UserError(
            f"GGUF export is not supported yet: {reason}. tuneforge writes GGUF for the llama architecture "
            "(SmolLM2, Llama, Mistral). Use --format hf, and convert that folder with llama.cpp's convert_hf_to_gguf.py."
        )


def estimated_bytes(plan: ExportPlan) -> int:
    from tuneforge.presets import estimate_model_params

    params = estimate_model_params(plan.source.name if plan.source.kind == "preset" else plan.source.path)
    per_param: float
    if plan.fmt == "hf":
        per_param = DTYPE_BYTES.get(stored_dtype(plan.base_config), 4)
    else:
        per_param = BYTES_PER_PARAM[plan.quant or "f16"]
    return int(params * per_param) + EXTRA_BYTES


def stored_dtype(config: Any) -> str:
    """The dtype the base model's weights were published in; an hf export keeps it."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(dtype).replace("torch.", "") if dtype is not None else "float32"
    return name if name in DTYPE_BYTES else "float32"


def check_disk(out: Path, need: int) -> None:
    where = _existing_ancestor(out.parent)
    free = shutil.disk_usage(where).free
    if free < need:
        raise UserError(
            f"Not enough disk for the export in '{where}': {free / 1e6:.0f} MB free, about {need / 1e6:.0f} MB needed. "
            "Free some space, choose --out on a bigger disk, or use --quant q8_0 for a smaller GGUF."
        )


def _existing_ancestor(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists():
        path = path.parent
    return path
