"""Where training data comes from: presets, local files, or the Hugging Face hub."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import UserError
from tuneforge.presets import DATASET_PRESETS

Conversation = list[dict[str, str]]


@dataclass
class LoadedData:
    conversations: list[Conversation]
    source: str  # where it came from, for the log and the model card
    licence: str = ""


def load_conversations(spec: str) -> LoadedData:
    """Resolve a dataset spec and read it fully, before any model is loaded (fail fast)."""
    if spec in DATASET_PRESETS:
        return _load_preset(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        from tuneforge.data.local_files import read_local_file

        return LoadedData(read_local_file(path), f"local file {path}")
    if "/" in spec and not path.exists() and not spec.startswith((".", "/", "~")):
        return _load_hub(spec)
    raise UserError(
        f"Dataset '{spec}' is neither a preset nor an existing file. Presets: "
        f"{', '.join(DATASET_PRESETS)}. Or pass a .jsonl/.json file, or a Hugging Face id such as org/name."
    )


def _load_preset(name: str) -> LoadedData:
    from tuneforge.data.hpo import load_medical_terms

    conversations, source = load_medical_terms()
    return LoadedData(conversations, source, DATASET_PRESETS[name].licence)


def _load_hub(spec: str) -> LoadedData:
    """Hub datasets need internet; say so plainly instead of showing a connection traceback."""
    try:
        import datasets

        rows = datasets.load_dataset(spec, split="train")
    except Exception as exc:  # noqa: BLE001 - any failure here means "can't fetch it"
        raise UserError(
            f"Could not load the dataset '{spec}' from the Hugging Face hub (needs internet): "
            f"{str(exc).splitlines()[0][:200]}. Use a local file or the offline preset 'medical-terms'."
        ) from None
    from tuneforge.data.local_files import _to_messages

    return LoadedData([_to_messages(dict(r), f"{spec}:{i + 1}") for i, r in enumerate(rows)], f"hub dataset {spec}")
