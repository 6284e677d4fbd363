"""Datasets from the Hugging Face hub, the online presets, and folders written by `save_to_disk`.

Offline use must end with "needs internet: ..." in a second, not a stack trace after 25 s of
`datasets` retrying a host it can't resolve, so we test the connection once first.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tuneforge.errors import UserError


def is_saved_dataset(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return path.is_dir() and any((path / name).is_file() for name in ("dataset_dict.json", "state.json"))


def load_saved(path: Path, split: str) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(train rows, validation rows) of a saved dataset folder, read with datasets.load_from_disk."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise UserError(f"{path}: the dataset has no split '{split}' (it has {', '.join(loaded)}). "
                            "Pick one with --dataset-split.", field="data.split")  # fmt: skip
        other = next((loaded[s] for s in ("validation", "test") if s in loaded and s != split), None)
        return _rows(loaded[split], f"{path}[{split}]"), _rows(other, f"{path}[validation]") if other else []
    return _rows(loaded, str(path)), []


def load_hub(hub_id: str, split: str, what: str) -> list[tuple[str, Any]]:
    """Rows of a hub dataset, or a UserError that starts with what is needed."""
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
        "HF_DATASETS_OFFLINE", ""
    ) not in ("", "0")
    if not offline and not hub_reachable():
        raise UserError(
            f"{what} needs internet: it downloads '{hub_id}' from the Hugging Face hub, which this machine "
            "can't reach. Go online, or use the offline preset 'medical-terms' or a local file "
            "(if you downloaded it before, set HF_HUB_OFFLINE=1 to use the cached copy).",
            field="data.dataset",
        )
    import datasets

    try:
        rows = datasets.load_dataset(hub_id, split=split)
    except Exception as exc:  # noqa: BLE001 - any failure here means "can't fetch it"
        hint = "needs internet: " if offline else ""
        raise UserError(
            f"{what} {hint}could not be loaded from the Hugging Face hub: {str(exc).splitlines()[0][:200]}. "
            "Check the id and --dataset-split, or use a local file or the offline preset 'medical-terms'.",
            field="data.dataset",
        ) from None
    return _rows(rows, f"{hub_id}[{split}]")


def hub_reachable(timeout: float = 3.0) -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _rows(dataset: Any, label: str) -> list[tuple[str, Any]]:
    return [(f"{label}:{index + 1}", dict(row)) for index, row in enumerate(dataset)]
