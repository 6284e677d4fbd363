"""Where preference pairs come from: the offline preset, a local file or folder, a saved dataset, or the hub.

The same sources as SFT data (data/__init__.py), read fully and checked row by row before
any model loads; only the row shapes differ (data/preferences.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.data import LoadedData, read_source
from tuneforge.data.preferences import convert_pairs
from tuneforge.data.split import Conversations
from tuneforge.errors import UserError
from tuneforge.presets import DATASET_PRESETS, PREFERENCE_DEFAULT

if TYPE_CHECKING:
    from tuneforge.config import DataSection


def load_preferences(spec: str, options: DataSection, method: str) -> LoadedData:
    """Pairs (or KTO examples) in `conversations`, each checked; `format` names the shape detected."""
    if spec == PREFERENCE_DEFAULT:
        from tuneforge.data.hpo_pairs import load_medical_preferences

        pairs, source = load_medical_preferences()
        loaded = LoadedData(Conversations(pairs), source, DATASET_PRESETS[spec].licence, "trl", rows=len(pairs))
    elif spec in DATASET_PRESETS:
        raise UserError(
            f"The dataset preset '{spec}' holds questions and answers, not preferences, so --method {method} "
            f"can't learn from it. Use --dataset {PREFERENCE_DEFAULT} (offline) or a preference file.",
            field="data.dataset",
        )
    else:
        loaded = _from_rows(spec, options, method)
    loaded.conversations.val_size = options.val_size
    return loaded


def _from_rows(spec: str, options: DataSection, method: str) -> LoadedData:
    rows, heldout, source, held_source = read_source(spec, options.split)
    pairs, fmt = convert_pairs(rows, str(options.format), options.map or {}, method)
    conversations = Conversations(pairs)
    if heldout:
        conversations.heldout = convert_pairs(  # type: ignore[assignment]  # pairs ride where conversations do
            heldout, fmt, options.map or {}, method
        )[0]
    return LoadedData(conversations, source, "", fmt, len(rows), 0, held_source)
