"""Where training data comes from: presets, local files and folders, saved datasets, or the hub.

`load_conversations` reads everything before any model loads, so bad data fails in seconds
with the file, the line and the field, never as a KeyError in the middle of training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.data.formats import apply_map, detect_format, to_conversation
from tuneforge.data.split import Conversations
from tuneforge.errors import UserError
from tuneforge.presets import DATASET_PRESETS

if TYPE_CHECKING:
    from tuneforge.config import DataSection

Conversation = list[dict[str, str]]
Rows = list[tuple[str, Any]]


@dataclass
class LoadedData:
    conversations: Conversations
    source: str  # where it came from, for the log and the model card
    licence: str = ""
    format: str = "messages"
    rows: int = 0  # rows read, before those with nothing to learn from were skipped
    skipped: int = 0
    validation_source: str = ""  # the user's own validation file, if any
    sources: list[dict[str, Any]] = field(default_factory=list)  # a mixture: what each source gave


def load_conversations(spec: str | list[str], data: DataSection | None = None) -> LoadedData:
    """Resolve a dataset spec (or a mixture of them) and read it fully, before any model is loaded (fail fast)."""
    from tuneforge.config import DataSection

    options = data or DataSection(dataset=spec)
    if isinstance(spec, list):
        from tuneforge.data.mixture import load_mixture

        loaded = load_mixture(spec, lambda one: load_conversations(one, options))
    elif spec in DATASET_PRESETS:
        loaded = _load_preset(spec)
    else:
        loaded = _load_rows(spec, options)
    loaded.conversations.val_size = options.val_size
    return loaded


def _load_preset(name: str) -> LoadedData:
    from tuneforge.data.hpo import load_medical_terms

    conversations, source = load_medical_terms()
    return LoadedData(Conversations(conversations), source, DATASET_PRESETS[name].licence, rows=len(conversations))


def _load_rows(spec: str, options: DataSection) -> LoadedData:
    from tuneforge.data.hub import load_hub
    from tuneforge.presets import ONLINE_PRESETS

    licence, held_source = "", ""
    fmt: str = options.format
    heldout: list[Any] = []
    if spec in ONLINE_PRESETS:
        preset = ONLINE_PRESETS[spec]
        rows = load_hub(preset.hub_id, options.split, f"The dataset preset '{spec}'")
        source, licence = f"preset {spec}: {preset.description} ({preset.hub_id})", preset.licence
        fmt = preset.format if fmt == "auto" else fmt
    else:
        rows, heldout, source, held_source = read_source(spec, options.split)
    conversations, fmt, skipped = convert_rows(rows, fmt, options.map or {}, spec)
    if heldout:
        conversations.heldout = convert_rows(heldout, fmt, options.map or {}, held_source or spec)[0]
    return LoadedData(conversations, source, licence, fmt, len(rows), skipped, held_source)


def read_source(spec: str, split: str) -> tuple[Rows, Rows, str, str]:
    """(rows, held-out rows, where they came from, where the held-out ones came from) for a file, a
    saved dataset, a folder (with its validation file) or a hub id: one rule for SFT and preference data."""
    from tuneforge.data.hub import is_saved_dataset, load_hub, load_saved
    from tuneforge.data.readers import read_rows

    path = Path(spec).expanduser()
    if path.is_file():
        return read_rows(path), [], f"local file {path}", ""
    if is_saved_dataset(path):
        rows, heldout = load_saved(path, split)
        return rows, heldout, f"saved dataset {path}", ""
    if path.is_dir():
        train_file, held_file = folder_files(path)
        heldout = read_rows(held_file) if held_file else []
        return read_rows(train_file), heldout, f"local folder {path} ({train_file.name})", str(held_file or "")
    if "/" in spec and not spec.startswith((".", "/", "~")):
        return load_hub(spec, split, f"The dataset '{spec}'"), [], f"hub dataset {spec} [{split}]", ""
    raise _unknown_spec(spec)


def convert_rows(rows: Rows, fmt: str, mapping: dict[str, str], label: str) -> tuple[Conversations, str, int]:
    """Rows to conversations in one format (detected from the first row unless given)."""
    if not rows:
        raise UserError(f"{label}: the dataset is empty. Put at least one example in it.", field="data.dataset")
    first_where, first_row = rows[0]
    if fmt == "auto":
        fmt = detect_format(apply_map(first_row, mapping, first_where), first_where)
    conversations, skipped = Conversations(), []
    for where, row in rows:
        conversation = to_conversation(apply_map(row, mapping, where), fmt, where)
        if conversation is None:
            skipped.append(where)
        else:
            conversations.append(conversation)
    if not conversations:
        raise UserError(
            f"{skipped[0]}: every row was filtered out: all {len(skipped)} rows have an empty answer "
            f"(or empty text, format {fmt}), so there is nothing to learn from. Check the field mapping "
            "with `tuneforge data check`, or fill in the answers.",
            field="data.dataset",
        )
    return conversations, fmt, len(skipped)


def folder_files(folder: Path) -> tuple[Path, Path | None]:
    """train.* (required) and validation.*, val.* or test.* (optional) in a dataset folder."""
    from tuneforge.data.readers import SUFFIXES

    def find(*stems: str) -> Path | None:
        found = [p for stem in stems for p in sorted(folder.glob(f"{stem}.*")) if p.suffix.lower() in SUFFIXES]
        return found[0] if found else None

    train = find("train")
    if train is None:
        names = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
        raise UserError(
            f"{folder}: a dataset folder needs a train file (train.jsonl, train.csv, ...) and optionally "
            f"validation.* or test.*; it holds {names}.",
            field="data.dataset",
        )
    return train, find("validation", "valid", "val", "test")


def _unknown_spec(spec: str) -> UserError:
    from tuneforge.presets import ONLINE_PRESETS

    return UserError(
        f"Dataset '{spec}' is neither a preset nor an existing file or folder. Offline preset: "
        f"{', '.join(DATASET_PRESETS)}; online presets: {', '.join(ONLINE_PRESETS)}. Or pass a "
        ".jsonl/.json/.csv/.tsv/.parquet/.txt file, a folder with train.*, or a Hugging Face id such as org/name.",
        field="data.dataset",
    )
