"""Open a results folder from `tuneforge train`: check it, find its base model, load both for answering.

chat, eval, serve and export all open runs here, so they agree on one rule for which base model
an adapter belongs to (`base_model_for`). The base is named twice in a results folder:
`tuneforge.yaml` holds what the user typed (`model.name`), and peft's `adapter_config.json`
holds the path that was actually loaded. Both must point at the same model, or the adapter's
weights would be added to the wrong matrices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.models.loading import ModelSource, resolve_model

NEEDED = ("adapter_config.json", "adapter_model.safetensors", "tuneforge.yaml")


@dataclass(frozen=True)
class TrainedRun:
    folder: Path
    source: ModelSource  # the base model to load
    config: dict[str, Any]  # tuneforge.yaml
    training: dict[str, Any] = field(default_factory=dict)  # metrics.json of the run, if any

    @property
    def max_length(self) -> int:
        return int(self.config.get("train", {}).get("max_seq_length", 512))


def open_run(folder: Path, model_override: str | None = None) -> TrainedRun:
    """Every check that needs no model weights: the folder, its files, the base model's identity."""
    from tuneforge.runs.resume import run_status

    if not folder.is_dir():
        raise UserError(
            f"The adapter folder '{folder}' does not exist. "
            "Pass the results folder of a run with --adapter (default: results)."
        )
    missing = [name for name in NEEDED if not (folder / name).is_file()]
    if missing and run_status(folder) == "unfinished":
        raise UserError(
            f"The run in '{folder}' has not finished, so it has no adapter yet. Run the same `tuneforge train` "
            "command again to resume it; it continues from its newest checkpoint."
        )
    if missing:
        raise UserError(
            f"'{folder}' is not a tuneforge results folder: {', '.join(missing)} missing. "
            "Pass the folder `tuneforge train` wrote (its --output-dir) with --adapter."
        )
    config = read_run_config(folder)
    source = base_model_for(folder, config, model_override)
    metrics = folder / "metrics.json"
    training = json.loads(metrics.read_text(encoding="utf-8")) if metrics.is_file() else {}
    return TrainedRun(folder, source, config, training)


def read_run_config(folder: Path) -> dict[str, Any]:
    """tuneforge.yaml of the run, or {} for an adapter trained elsewhere (plain peft)."""
    import yaml

    path = folder / "tuneforge.yaml"
    if not path.is_file():
        return {}
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{path} is not valid YAML ({first}). Restore it from the training run.") from None


def base_model_for(folder: Path, run_config: dict[str, Any], override: str | None = None) -> ModelSource:
    """The one rule for an adapter's base model.

    Without --model: what tuneforge.yaml names, else what adapter_config.json recorded; when both
    are there they must agree. With --model: it must be the recorded base, unless that base is
    nowhere to be found here (a moved folder): then peft still checks every tensor's shape.
    """
    named = str((run_config.get("model") or {}).get("name") or "")
    peft_base = str(_adapter_config(folder).get("base_model_name_or_path") or "")
    if override is None:
        if not (named or peft_base):
            raise UserError(f"Nothing in '{folder}' says which base model it was trained on. Name it with --model.")
        source = resolve_model(named or peft_base)
        if named and peft_base and not same_model(peft_base, source):
            raise UserError(
                f"The base model from tuneforge.yaml (model.name: {named}) does not match the adapter's: "
                f"adapter_config.json in '{folder}' was trained on '{peft_base}'. Restore tuneforge.yaml from the "
                f"training run, or pass --model {peft_base}."
            )
        return source
    chosen = resolve_model(override)
    recorded = [name for name in (named, peft_base) if name]
    if not recorded or any(same_model(name, chosen) for name in recorded) or not any(_findable(n) for n in recorded):
        return chosen
    raise UserError(
        f"The base model from --model {override} does not match the adapter's: the adapter in '{folder}' was "
        f"trained on base model '{recorded[0]}', but --model is '{override}'. An adapter only fits the base it "
        f"was trained on: leave --model out, or pass --model {recorded[0]}."
    )


def same_model(recorded: str, source: ModelSource) -> bool:
    """A preset matches by name (its cache folder may have moved); a folder by its real path; a hub id as typed."""
    if recorded == source.name:
        return True
    if source.kind == "preset":
        return Path(recorded).name == source.name
    return _real(recorded) == _real(source.path)


def model_key(source: ModelSource) -> str:
    """One string per distinct base model, for telling whether several adapters share one."""
    return f"preset:{source.name}" if source.kind == "preset" else _real(source.path)


def load_tuned(run: TrainedRun) -> tuple[Any, Any]:
    """The base model wrapped with the run's adapter, and the tokenizer saved with the run."""
    from peft import PeftModel

    from tuneforge.models.loading import load_for_inference
    from tuneforge.models.tokenizer import load_tokenizer_from

    trust = bool(run.config.get("model", {}).get("trust_remote_code", False))
    tokenizer = load_tokenizer_from(run.folder, trust, with_chat_template=True)
    base = load_for_inference(run.source, trust_remote_code=trust)
    try:
        model = PeftModel.from_pretrained(base, run.folder)
    except RuntimeError as exc:  # shape mismatch: the adapter was made for another architecture
        raise UserError(
            f"The adapter in '{run.folder}' does not fit the base model '{run.source.name}': "
            f"{str(exc).splitlines()[0][:200]}. Use the base model the adapter was trained on."
        ) from None
    return model.eval(), tokenizer


def _adapter_config(folder: Path) -> dict[str, Any]:
    path = folder / "adapter_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}). Restore it from the training run."
        ) from None
    return data if isinstance(data, dict) else {}


def _findable(name: str) -> bool:
    """A recorded base that still exists here: a preset, an existing folder, or a hub id."""
    from tuneforge.presets import MODEL_PRESETS

    hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    return name in MODEL_PRESETS or Path(name).expanduser().exists() or hub_id


def _real(name: str) -> str:
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name
