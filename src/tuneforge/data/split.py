"""A held-out set that is the same on every run and every machine, so eval never sees training data."""

from __future__ import annotations

import json
import random
from pathlib import Path

Conversation = list[dict[str, str]]


def split_heldout(
    conversations: list[Conversation], fraction: float, minimum: int, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """Shuffle indices with a private RNG (never the global one) and cut off the held-out part.

    At least `minimum` examples are held out, but never more than half of a small dataset.
    """
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    count = max(round(len(order) * fraction), minimum)
    count = min(count, len(order) // 2)
    held = sorted(order[:count])
    held_set = set(held)
    train = [conversations[i] for i in range(len(conversations)) if i not in held_set]
    return train, [conversations[i] for i in held]


def write_jsonl(path: Path, conversations: list[Conversation]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for messages in conversations:
            handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
