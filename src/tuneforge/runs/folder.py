"""Open a results folder from `tuneforge train` (for chat and eval): check it is ours, find its base, load both.

The base model is named twice in a results folder: `tuneforge.yaml` holds what the user typed
(`model.name`), and peft's `adapter_config.json` holds the path that was actually loaded. Both
must point at the same model, or the adapter's weights would be added to the wrong matrices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import UserError
from tuneforge.models.loading import ModelSource, resolve_model

NEEDED = ("adapter_config.json", "adapter_model.safetensors", "tuneforge.yaml")


@dataclass
class TrainedRun:
    folder: Path
    source: ModelSource  # the base model to load
    config: dict[str, Any]  # tuneforge.yaml
    training: dict[str, Any] = field(default_factory=dict)  # metrics.json of the run, if any

    @property
    def max_length(self) -> int:
        return int(self.config.get("train", {}).get("max_seq_length", 512))


def unfinished_run(folder: Path) -> bool:
    from tuneforge.runs.resume import run_status

    return run_status(folder) == "unfinished"


def open_results(folder: Path, model_override: str | None = None) -> TrainedRun:
    """Every check that needs no model weights: the folder, its files, the base model's identity."""
    if not folder.is_dir():
        raise UserError(
            f"The adapter folder '{folder}' does not exist. "
            "Pass the results folder of a run with --adapter (default: results)."
        )
    missing = [name for name in NEEDED if not (folder / name).is_file()]
    if missing and unfinished_run(folder):
        raise UserError(
            f"The run in '{folder}' has not finished, so it has no adapter yet. Run the same `tuneforge train` "
            "command again to resume it; it continues from its newest checkpoint."
        )
    if missing:
        raise UserError(
            f"'{folder}' is not a tuneforge results folder: {', '.join(missing)} missing. "
            "Pass the folder `tuneforge train` wrote (its --output-dir) with --adapter."
        )
    config = yaml.safe_load((folder / "tuneforge.yaml").read_text(encoding="utf-8")) or {}
    recorded = (
        json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path") or ""
    )
    named = str(config.get("model", {}).get("name", ""))
    source = resolve_model(model_override or named)
    if not same_model(recorded, source):
        where = f"--model {model_override}" if model_override else f"tuneforge.yaml (model.name: {named})"
        raise UserError(
            f"The base model from {where} does not match the adapter's: adapter_config.json in '{folder}' "
            f"was trained on '{recorded}'. Evaluate with the base the adapter was trained on "
            f"(drop --model, or pass --model {recorded})."
        )
    metrics = folder / "metrics.json"
    training = json.loads(metrics.read_text(encoding="utf-8")) if metrics.is_file() else {}
    return TrainedRun(folder, source, config, training)


def same_model(recorded: str, source: ModelSource) -> bool:
    """A preset matches by name (the cache folder may have moved); a folder by its real path."""
    if source.kind == "preset":
        return Path(recorded).name == source.name
    if source.kind == "local":
        return bool(recorded) and Path(recorded).expanduser().resolve() == Path(source.path).expanduser().resolve()
    return recorded == source.path


def load_tuned(run: TrainedRun) -> tuple[Any, Any]:
    """The base model wrapped with the run's adapter, and the tokenizer saved with the run."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from tuneforge.models.loading import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # CPU: fp32, the format training used
    trust = bool(run.config.get("model", {}).get("trust_remote_code", False))
    tokenizer = AutoTokenizer.from_pretrained(run.folder, trust_remote_code=trust)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = load_model(run.source, dtype, device, trust_remote_code=trust)
    try:
        model = PeftModel.from_pretrained(base, run.folder)
    except RuntimeError as exc:  # shape mismatch: the adapter was made for another architecture
        raise UserError(
            f"The adapter in '{run.folder}' does not fit the base model '{run.source.name}': "
            f"{str(exc).splitlines()[0][:200]}. Use the base model the adapter was trained on."
        ) from None
    return model.eval(), tokenizer
