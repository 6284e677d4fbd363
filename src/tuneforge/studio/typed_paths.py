"""What a typed model or data name will read, decided in the order `tuneforge train` decides it.

A preset name wins, then a file or folder on this machine, then a Hub id (`org/name`). The page
shows the answer before anything starts (`GET /api/resolve`), and the job's YAML carries the
absolute path, so the child reads exactly what was shown: a relative path or `~` would otherwise
mean whatever folder the studio, or a later resume from another studio, was started in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The settings that name something to read, and which presets their names may be.
PATH_SETTINGS = {"model.name": "model", "model.adapter": "adapter", "data.dataset": "data"}


def resolve_typed(typed: str, field: str = "data") -> dict[str, Any]:
    """{typed, path, kind, size}: kind is preset, file, folder, hub (fetched online) or missing."""
    shown: dict[str, Any] = {"typed": typed, "path": typed, "kind": "missing", "size": None}
    if typed in _presets(field):
        return shown | {"kind": "preset"}
    target = Path(typed).expanduser().resolve()
    if target.exists():
        kind = "folder" if target.is_dir() else "file"
        return shown | {"path": str(target), "kind": kind, "size": target.stat().st_size if kind == "file" else None}
    if field != "adapter" and typed.count("/") == 1 and not typed.startswith((".", "/", "~")):
        return shown | {"kind": "hub"}
    return shown | {"path": str(target)}


def absolute_paths(values: dict[str, Any]) -> dict[str, Any]:
    """The settings with every typed name that is a local file or folder replaced by its absolute path."""
    fixed = dict(values)
    for key, field in PATH_SETTINGS.items():
        if isinstance(values.get(key), str):
            found = resolve_typed(values[key], field)
            if found["kind"] in ("file", "folder"):
                fixed[key] = found["path"]
    return fixed


def _presets(field: str) -> set[str]:
    from tuneforge.presets import DATASET_PRESETS, MODEL_PRESETS, ONLINE_PRESETS

    if field == "model":
        return set(MODEL_PRESETS)
    return set(DATASET_PRESETS) | set(ONLINE_PRESETS) if field == "data" else set()
