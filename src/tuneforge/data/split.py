"""A held-out set that is the same on every run and every machine, so eval never sees training data."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tuneforge.errors import UserError

Conversation = list[dict[str, str]]


class Conversations(list):
    """A list of conversations that may carry its own held-out part.

    `heldout` is the user's validation file (a folder's validation.* or test.*), and `val_size`
    is --val-size; `split_heldout` honours both. They ride on the list so that train.py keeps
    calling `split_heldout(data.conversations, ...)` unchanged.
    """

    heldout: list[Conversation] | None = None
    val_size: float | None = None


def split_heldout(
    conversations: list[Conversation], fraction: float, minimum: int, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """Shuffle indices with a private RNG (never the global one) and cut off the held-out part.

    A validation file given by the user wins. Else --val-size (a fraction below 1, or a count)
    decides; else at least `minimum` examples are held out, never more than half of a small dataset.
    """
    heldout = getattr(conversations, "heldout", None)
    if heldout:
        return list(conversations), list(heldout)
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    count = heldout_count(len(order), fraction, minimum, getattr(conversations, "val_size", None))
    held = sorted(order[:count])
    held_set = set(held)
    train = [conversations[i] for i in range(len(conversations)) if i not in held_set]
    return train, [conversations[i] for i in held]


def heldout_count(total: int, fraction: float, minimum: int, val_size: float | None = None) -> int:
    if val_size is None:
        return min(max(round(total * fraction), minimum), total // 2)
    count = round(total * val_size) if val_size < 1 else int(val_size)
    if count >= total:
        raise UserError(
            f"data.val_size={val_size:g} holds out {count} of {total} examples, leaving none to train on. "
            "Use a smaller --val-size (a fraction such as 0.05, or a count).",
            field="data.val_size",
        )
    return count


def write_jsonl(path: Path, conversations: list[Conversation]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for messages in conversations:
            handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
