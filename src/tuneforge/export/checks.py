"""Everything `export` refuses, checked in seconds before any weights load or any byte is written."""

from __future__ import annotations

import json
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


def plan_export(adapter: Path, out: Path, fmt: str, quant: str | None, overwrite: bool, model: str | None) -> ExportPlan:
    from tuneforge.export.gguf_tokenizer import pre_tokenizer_name

    quant = check_format(fmt, quant)
    adapter, out = check_results_folder(adapter), out.expanduser()
    check_output(out, adapter, overwrite)
    run_config = read_run_config(adapter)
    source = pick_base(adapter, run_config, model)
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
            raise UserError(f"--quant {quant} applies to --format gguf only; an hf export keeps the base model's dtype.")
        return None
    if (quant or "f16") not in QUANTS:
        raise UserError(
            f"--quant '{quant}' is not one of {', '.join(QUANTS)}. f16 keeps the tuned model closest, q8_0 is half the size."
        )
    return quant or "f16"


def check_results_folder(adapter: Path) -> Path:
    adapter = adapter.expanduser()
    needed = ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json")
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


def read_run_config(adapter: Path) -> dict[str, Any]:
    """tuneforge.yaml of the run, or {} for an adapter trained elsewhere (plain peft)."""
    import yaml

    path = adapter / "tuneforge.yaml"
    if not path.is_file():
        return {}
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{path} is not valid YAML ({first}). Restore it from the training run.") from None


def pick_base(adapter: Path, run_config: dict[str, Any], model: str | None) -> ModelSource:
    """The base model: --model if given and it is the one the adapter was trained on, else the recorded one."""
    from tuneforge.models.loading import resolve_model

    trained_on = (run_config.get("model") or {}).get("name")
    peft_base = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    recorded = [name for name in (trained_on, peft_base) if name]
    if model is None:
        if not recorded:
            raise UserError(f"Nothing in '{adapter}' says which base model it was trained on. Name it with --model.")
        return resolve_model(recorded[0])
    chosen = resolve_model(model)
    if not recorded or any(_same_model(chosen, name) for name in recorded) or not any(_findable(n) for n in recorded):
        return chosen  # (the last case: the recorded base folder was moved; peft still checks every shape)
    raise UserError(
        f"The adapter in '{adapter}' was trained on base model '{recorded[0]}', but --model is '{model}'. "
        f"An adapter only fits the base it was trained on: leave --model out, or pass --model {recorded[0]}."
    )


def _same_model(chosen: ModelSource, name: str) -> bool:
    if name == chosen.name:
        return True
    return _real(name) == _real(chosen.path) or _real(name) == _real(chosen.name)


def _findable(name: str) -> bool:
    """A recorded base that still exists here: a preset, an existing folder, or a hub id."""
    from tuneforge.presets import MODEL_PRESETS

    hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    return name in MODEL_PRESETS or Path(name).expanduser().exists() or hub_id


def _real(name: str) -> str:
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def base_config(source: ModelSource) -> Any:
    """The base model's config (config.json only: no weights load here)."""
    from transformers import AutoConfig

    from tuneforge.models.loading import ensure_preset_cached

    path = ensure_preset_cached(source.name) if source.kind == "preset" else source.path
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
