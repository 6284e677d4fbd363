"""Load what `tuneforge serve` was asked to serve: one base model and its LoRA adapters.

Only safetensors weights load. A pickled `.bin` can run code when it is unpickled, so a
downloaded results folder must not be able to do that. `trust_remote_code` stays off for the
same reason. The base comes from each adapter's `tuneforge.yaml` (what the user trained on),
and all adapters must share it, because they are attached to a single copy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.serving.engine import BASE, Engine

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    path: Path


def parse_adapter_specs(values: list[str]) -> list[AdapterSpec]:
    """'results' or 'medical=runs/medical'; the name defaults to the folder's name."""
    specs: list[AdapterSpec] = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not _NAME.match(name):
            name, path = Path(value).expanduser().resolve().name, value
        spec = AdapterSpec(name, Path(path).expanduser())
        _check_adapter(spec, {s.name for s in specs})
        specs.append(spec)
    return specs


def _check_adapter(spec: AdapterSpec, taken: set[str]) -> None:
    where = f"--adapter {spec.name}={spec.path}"
    if not _NAME.match(spec.name):
        raise UserError(
            f"The adapter name '{spec.name}' ({where}) may use letters, digits, '.', '_' and '-' only. Name it with --adapter NAME=FOLDER."
        )
    if spec.name == BASE or spec.name in taken:
        why = "is reserved for the base model" if spec.name == BASE else "is used twice"
        raise UserError(f"The adapter name '{spec.name}' {why}. Pick another with --adapter NAME=FOLDER.")
    if not (spec.path / "adapter_config.json").is_file():
        raise UserError(
            f"'{spec.path}' ({where}) is not a results folder: it has no adapter_config.json. "
            "Point --adapter at the output folder of `tuneforge train` (default: results)."
        )
    if not (spec.path / "adapter_model.safetensors").is_file():
        raise UserError(
            f"'{spec.path}' has no adapter_model.safetensors. Only safetensors adapters are served, because "
            "pickled .bin weights can run code when loaded. Re-save the adapter with safe_serialization=True."
        )


def base_model_name(specs: list[AdapterSpec], override: str | None) -> str:
    """--model if given; otherwise the base every adapter was trained on, which must be the same."""
    if override:
        return override
    if not specs:
        raise UserError(
            "Nothing to serve: give --adapter FOLDER (a results folder), or --model to serve a base model alone."
        )
    names = {spec.name: _trained_on(spec) for spec in specs}
    if len({_same_key(n) for n in names.values()}) > 1:
        listing = "; ".join(f"{k}: {v}" for k, v in names.items())
        raise UserError(
            f"These adapters were trained on different base models ({listing}). Serve them with separate `tuneforge serve` processes."
        )
    return next(iter(names.values()))


def _trained_on(spec: AdapterSpec) -> str:
    import yaml

    config_file = spec.path / "tuneforge.yaml"
    if config_file.is_file():
        data = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        name = (data.get("model") or {}).get("name")
        if name:
            return str(name)
    name = json.loads((spec.path / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not name:
        raise UserError(f"Can't tell which base model '{spec.path}' was trained on. Give it with --model.")
    return str(name)


def _same_key(name: str) -> str:
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def load_engine(specs: list[AdapterSpec], base_name: str, log: Callable[[str], None] = print) -> Engine:
    from tuneforge.data.encode import CHATML_TEMPLATE
    from tuneforge.models.loading import resolve_model

    source = resolve_model(base_name)
    device, dtype = _device_and_dtype()
    log(f"base model: {source.description} on {device}")
    model = _load_base(source, dtype, device)
    tokenizer = _load_tokenizer(specs[0].path if specs else None, source)
    if specs:
        model = _attach_adapters(model, specs, log)
    model.eval()
    context = _context_length(model.config, tokenizer)
    return Engine(model, tokenizer, [s.name for s in specs], context, tokenizer.chat_template or CHATML_TEMPLATE)


def _device_and_dtype() -> tuple[str, Any]:
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if torch.backends.mps.is_available():
        return "mps", torch.float32
    return "cpu", torch.float32


def _load_base(source: Any, dtype: Any, device: str) -> Any:
    from transformers import AutoModelForCausalLM

    from tuneforge.models.loading import ensure_preset_cached

    path = str(ensure_preset_cached(source.name)) if source.kind == "preset" else source.path
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"Could not load the base model '{source.name}' as safetensors: {str(exc).splitlines()[0][:240]}. "
            "Only safetensors weights are served (pickled .bin files can run code), and no remote code runs."
        ) from None
    return model.to(device)


def _load_tokenizer(adapter_dir: Path | None, source: Any) -> Any:
    """The results folder's tokenizer first: training may have added the pad token or chat template."""
    from transformers import AutoTokenizer

    from tuneforge.models.loading import ensure_preset_cached

    if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").is_file():
        path = str(adapter_dir)
    else:
        path = str(ensure_preset_cached(source.name)) if source.kind == "preset" else source.path
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _attach_adapters(base: Any, specs: list[AdapterSpec], log: Callable[[str], None]) -> Any:
    """One base in memory; each extra adapter adds only its LoRA matrices (peft multi-adapter)."""
    from peft import PeftModel

    model = None
    for spec in specs:
        try:
            if model is None:
                model = PeftModel.from_pretrained(base, str(spec.path), adapter_name=spec.name, is_trainable=False)
            else:
                model.load_adapter(str(spec.path), adapter_name=spec.name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UserError(
                f"The adapter '{spec.name}' in '{spec.path}' does not fit this base model: "
                f"{str(exc).splitlines()[0][:240]}. Was it trained on another model? Set --model to its base."
            ) from None
        log(f"adapter '{spec.name}': {spec.path}")
    return model


def _context_length(config: Any, tokenizer: Any) -> int:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 0)
    return limit if 0 < limit < 1_000_000 else 2048
