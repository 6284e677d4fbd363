"""Open a results folder from `tuneforge train`: check it, find its base model, load both for answering.

chat, eval, serve and export all open runs here, so they agree on one rule for which base model
an adapter belongs to (`base_model_for`). The base is named twice in a results folder:
`tuneforge.yaml` holds what the user typed (`model.name`), and peft's `adapter_config.json`
holds a name that works on other machines too (a preset's Hub id, a local folder's name). Both
must point at the same model, or the adapter's weights would be added to the wrong matrices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.models.loading import ModelSource, resolve_model

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
FULL_FILES = ("config.json", "model.safetensors")


def is_full_model(folder: Path) -> bool:
    """The one rule for what a results folder holds: a full fine-tune's model (config.json, no
    adapter_config.json; `--finetune full`), else a LoRA/DoRA adapter. chat, eval, serve, export
    and push ask here."""
    return (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file()


def weight_files(folder: Path) -> tuple[str, ...]:
    """The files that hold what the run trained: the full model's, or the adapter's."""
    return FULL_FILES if is_full_model(folder) else ADAPTER_FILES


@dataclass(frozen=True)
class TrainedRun:
    folder: Path
    source: ModelSource  # the base model to load
    config: dict[str, Any]  # tuneforge.yaml
    training: dict[str, Any] = field(default_factory=dict)  # metrics.json of the run, if any

    @property
    def max_length(self) -> int:
        return int(self.config.get("train", {}).get("max_seq_length", 512))


def open_run(folder: Path, model_override: str | None = None, checksums: bool = True) -> TrainedRun:
    """Every check that needs no model weights: the folder, its files, the base model's identity."""
    from tuneforge.runs.resume import run_status

    if not folder.is_dir():
        raise UserError(
            f"The adapter folder '{folder}' does not exist. "
            "Pass the results folder of a run with --adapter (default: results)."
        )
    missing = [name for name in (*weight_files(folder), "tuneforge.yaml") if not (folder / name).is_file()]
    if missing and run_status(folder) == "unfinished":
        raise UserError(
            f"The run in '{folder}' has not finished, so it has no adapter yet. Run the same `tuneforge train` "
            "command again to resume it; it continues from its newest checkpoint."
        )
    check_folder(folder, checksums)
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


def check_folder(folder: Path, checksums: bool = True) -> None:
    """The one integrity check readers run before loading anything from a results folder.

    With a manifest (every run since it was added): each listed file's size, and its SHA-256
    unless `checksums` is off. Without one (older runs, adapters made elsewhere): the files a
    reader parses must parse. Damage is a UserError naming the file and the way back (repair.py).
    """
    from tuneforge.runs.manifest import RESULTS_MANIFEST, problems, read_results_manifest
    from tuneforge.runs.repair import damaged

    try:
        manifest = read_results_manifest(folder)
    except ValueError as exc:
        raise damaged(folder, {RESULTS_MANIFEST: str(exc)}, None) from None
    if manifest is None:
        found = _unreadable_files(folder)
    else:
        found = problems(folder, manifest, checksums)
    if found:
        raise damaged(folder, found, manifest)


def _unreadable_files(folder: Path) -> dict[str, str]:
    """No manifest to compare with: each file a reader needs must at least parse."""
    import yaml

    found: dict[str, str] = {}
    for name in ("adapter_config.json", "tokenizer.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            try:
                json.loads((folder / name).read_text(encoding="utf-8"))
            except (ValueError, OSError) as exc:
                found[name] = f"{name} is not valid JSON ({type(exc).__name__})"
    if (folder / "tuneforge.yaml").is_file():
        try:
            yaml.safe_load((folder / "tuneforge.yaml").read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError, ValueError):
            found["tuneforge.yaml"] = "tuneforge.yaml is not valid YAML"
    weights = folder / "adapter_model.safetensors"
    if weights.is_file() and not _safetensors_readable(weights):
        found["adapter_model.safetensors"] = "adapter_model.safetensors has no readable safetensors header"
    if (folder / "tokenizer_config.json").is_file() and not any(
        (folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")
    ):
        found["tokenizer.json"] = "tokenizer.json is missing (tokenizer_config.json has no vocabulary without it)"
    return found


def _safetensors_readable(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception:  # noqa: BLE001 - SafetensorError, OSError, ...: any of them means the header can't be read
        return False
    return True


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
    are there they must agree. adapter_config.json holds a portable name (models.loading:
    portable_name): a preset's Hub id, which maps back to the preset here, offline, or a local
    folder's name. With --model: it must be the recorded base, unless that base is nowhere to be
    found here (a copied run): then peft still checks every tensor's shape.
    """
    named = str((run_config.get("model") or {}).get("name") or "")
    peft_base = str(_adapter_config(folder).get("base_model_name_or_path") or "")
    if override is None:
        if not (named or peft_base):
            raise UserError(f"Nothing in '{folder}' says which base model it was trained on. Name it with --model.")
        source = _recorded_source(folder, named or peft_base, peft_base)
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


def _recorded_source(folder: Path, recorded: str, peft_base: str) -> ModelSource:
    """The recorded base as a source here: a preset's Hub id is the preset; a local folder must exist."""
    from tuneforge.presets import preset_for_hub_id

    preset = preset_for_hub_id(recorded)
    if preset is not None:
        return resolve_model(preset.name)  # the embedded copy, offline; not a download of the same weights
    if _local_name(recorded) and not Path(recorded).expanduser().exists():
        folder_name = Path(peft_base or recorded).name
        raise UserError(
            f"The adapter in '{folder}' was trained on a local model folder, '{recorded}', which is not on this "
            f"machine (adapter_config.json names it '{folder_name}'). Copy that model folder here and pass its "
            f"path with --model, e.g. --model path/to/{folder_name}."
        )
    return resolve_model(recorded)


def same_model(recorded: str, source: ModelSource) -> bool:
    """Does a recorded name point at `source`?

    A preset matches by name, by its Hub id, or by its cache folder's name (runs before portable
    names recorded the cache path); a local folder by its real path, or by its folder name when
    that is all adapter_config.json holds; a Hub id as typed.
    """
    from tuneforge.presets import MODEL_PRESETS

    if recorded == source.name:
        return True
    if source.kind == "preset":
        return recorded == MODEL_PRESETS[source.name].hub_id or Path(recorded).name == source.name
    if source.kind == "local" and "/" not in recorded and not Path(recorded).exists():
        return Path(source.path).expanduser().resolve().name == recorded
    return _real(recorded) == _real(source.path)


def model_key(source: ModelSource) -> str:
    """One string per distinct base model, for telling whether several adapters share one."""
    return f"preset:{source.name}" if source.kind == "preset" else _real(source.path)


def load_tuned(run: TrainedRun) -> tuple[Any, Any]:
    """The base model wrapped with the run's adapter, and the tokenizer saved with the run.

    A full fine-tune loads its own weights instead, with the base beside it on first use
    (models/with_base.py), so `disable_adapter()` gives the base in both cases.
    """
    from peft import PeftModel

    from tuneforge.models.loading import load_for_inference
    from tuneforge.models.tokenizer import load_tokenizer_from

    trust = bool(run.config.get("model", {}).get("trust_remote_code", False))
    tokenizer = load_tokenizer_from(run.folder, trust, with_chat_template=True)
    if is_full_model(run.folder):
        return load_full(run.folder, run.source, trust).eval(), tokenizer
    base = load_for_inference(run.source, trust_remote_code=trust)
    try:
        model = PeftModel.from_pretrained(base, run.folder)
    except RuntimeError as exc:  # shape mismatch: the adapter was made for another architecture
        raise UserError(
            f"The adapter in '{run.folder}' does not fit the base model '{run.source.name}': "
            f"{str(exc).splitlines()[0][:200]}. Use the base model the adapter was trained on."
        ) from None
    return model.eval(), tokenizer


def load_full(folder: Path, base: ModelSource, trust_remote_code: bool = False) -> Any:
    """A full fine-tune's weights for answering, its base loaded beside it when first asked for."""
    from tuneforge.models.loading import load_for_inference
    from tuneforge.models.with_base import WithBase

    tuned = load_for_inference(ModelSource(str(folder), str(folder), "local", f"full fine-tune in {folder}"),
                               trust_remote_code=trust_remote_code)  # fmt: skip
    return WithBase(tuned, lambda: load_for_inference(base, trust_remote_code=trust_remote_code))


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


def _local_name(name: str) -> bool:
    """A recorded name that can only be a local folder: a path, or a bare folder name (no org/ part)."""
    from tuneforge.presets import MODEL_PRESETS

    return name not in MODEL_PRESETS and (name.startswith((".", "/", "~")) or name.count("/") != 1)


def _real(name: str) -> str:
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name
