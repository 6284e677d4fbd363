"""Several training sources in one run, each with an optional weight: `--dataset a.jsonl --dataset b:0.3`.

Each source is read and checked on its own (its own format, its own file:line errors), then
sampled by its weight: the share of its rows used. 0.3 takes a fixed 30% sample, 2 repeats every
row twice, 1.5 takes every row once and half of them again. The sample is drawn with a
generator seeded by the source's name, so the same command gives the same mixture on every
machine and a resume sees the same rows. What each source gave goes to the log and metrics.json.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tuneforge.config import split_weight
from tuneforge.data.split import Conversations

if TYPE_CHECKING:
    from tuneforge.data import LoadedData


def load_mixture(specs: list[str], load_one: Callable[[str], LoadedData]) -> LoadedData:
    from tuneforge.data import LoadedData

    mixed, heldout, parts = Conversations(), [], []
    sources: list[dict[str, Any]] = []
    formats: list[str] = []
    licences: list[str] = []
    for spec in specs:
        name, weight = split_weight(spec)
        loaded = load_one(name)
        taken = weighted(list(loaded.conversations), 1.0 if weight is None else weight, name)
        mixed.extend(taken)
        heldout.extend(loaded.conversations.heldout or [])
        formats.append(loaded.format)
        licences += [f"{name}: {loaded.licence}"] if loaded.licence else []
        sources.append({"dataset": name, "weight": weight or 1.0, "rows": loaded.rows,
                        "examples_read": len(loaded.conversations), "examples_used": len(taken)})  # fmt: skip
        parts.append(f"{loaded.source} × {weight or 1:g}: {len(taken)} examples")
    mixed.heldout = heldout or None
    fmt = formats[0] if len(set(formats)) == 1 else "mixed (" + ", ".join(sorted(set(formats))) + ")"
    licence = "; ".join(licences)
    rows = sum(int(source["rows"]) for source in sources)
    return LoadedData(
        mixed, f"mixture of {len(specs)} sources: " + "; ".join(parts), licence, fmt, rows, 0, "", sources
    )


def weighted(conversations: list[Any], weight: float, name: str) -> list[Any]:
    """Whole copies for the integer part of the weight, a fixed sample for the rest."""
    whole, share = int(weight), weight - int(weight)
    sample = list(conversations)
    random.Random(name).shuffle(sample)
    return conversations * whole + sample[: round(share * len(conversations))]
