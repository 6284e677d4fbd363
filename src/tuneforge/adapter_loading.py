"""Open a results folder from `tuneforge train`: find its base model and load base + adapter.

Only safetensors adapters load (peft's default file), and the base model is the one the run
recorded in tuneforge.yaml, so a user never has to remember or retype it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import UserError


def base_model_name(adapter_dir: Path) -> str:
    """The model name the run was trained on, as the user typed it (preset, folder or hub id)."""
    check_adapter_dir(adapter_dir)
    config_file = adapter_dir / "tuneforge.yaml"
    if not config_file.is_file():
        raise UserError(f"'{adapter_dir}' has an adapter but no tuneforge.yaml, so its base model is unknown.")
    return str(yaml.safe_load(config_file.read_text(encoding="utf-8"))["model"]["name"])


def check_adapter_dir(adapter_dir: Path) -> None:
    if not adapter_dir.is_dir():
        raise UserError(
            f"The adapter folder '{adapter_dir}' does not exist. Train first (./run.sh or tuneforge train), "
            "or point --adapter at the results folder of a finished run."
        )
    if not (adapter_dir / "adapter_config.json").is_file() or not (adapter_dir / "adapter_model.safetensors").is_file():
        raise UserError(
            f"'{adapter_dir}' is not a tuneforge results folder: adapter_config.json or "
            "adapter_model.safetensors is missing. Point --adapter at the folder a finished run wrote."
        )


def load_tuned(adapter_dir: Path, device: str = "cpu") -> tuple[Any, Any]:
    """The base model with the adapter attached (peft), and the run's tokenizer."""
    import torch
    from peft import PeftModel

    from tuneforge.model_loading import load_model, load_tokenizer, resolve_model

    source = resolve_model(base_model_name(adapter_dir))
    base = load_model(source, torch.float32, device)
    tokenizer = load_tokenizer(source)
    model = PeftModel.from_pretrained(base, adapter_dir, use_safetensors=True)
    return model.eval(), tokenizer
