"""A held-out set that is the same on every run and every machine, so eval never sees training data."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tuneforge.errors import UserError

Conversation = list[dict[str, str]]
MAX_HELDOUT_SHARE = 0.10  # by default never more than this share of the rows is held out
SMALL_DATASET = 50  # below this many rows nothing is held out unless --val-size asks
TOO_FEW_TO_MEAN_MUCH = 20  # a held-out loss on fewer examples is noise


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
    decides; else `fraction` of the rows, at least `minimum`, but never more than 10% of them, and
    nothing at all below SMALL_DATASET rows: a 91-row set once lost 45 rows to a 2%-at-least-200 rule.
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
        if total < SMALL_DATASET:
            return 0
        return min(max(round(total * fraction), minimum), int(total * MAX_HELDOUT_SHARE))
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
            row = {
                "messages": messages,
                **({"tools": getattr(messages, "tools", None)} if getattr(messages, "tools", None) else {}),
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def heldout_note(count: int) -> str | None:
    """The warning the log and `tuneforge eval` print when a held-out set is too small to mean much."""
    if count == 0:
        return (
            f"nothing held out (fewer than {SMALL_DATASET} rows): no held-out loss is measured. "
            "Ask for some with --val-size (a fraction such as 0.1, or a count)."
        )
    if count < TOO_FEW_TO_MEAN_MUCH:
        return (
            f"only {count} held-out examples: their loss and scores are too few to mean much "
            f"(at least {TOO_FEW_TO_MEAN_MUCH} are needed for a rough figure)."
        )
    return None
