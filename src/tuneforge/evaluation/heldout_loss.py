"""Held-out loss and perplexity on the answer tokens only, the figure training optimises.

The prompt is masked exactly as in training (`encode_conversation`), so this loss is comparable
with the training loss. Token-weighted over the whole set: a long answer counts for more tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tuneforge.data.encode import IGNORE, encode_conversation


@dataclass
class HeldOutLoss:
    loss: float
    perplexity: float
    tokens: int  # answer tokens scored


def answer_loss(
    model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], max_length: int = 512, batch_size: int = 4
) -> HeldOutLoss | None:
    """Mean cross-entropy over every answer token of every conversation; None if none has answer tokens."""
    rows = [encode_conversation(tokenizer, messages, max_length) for messages in conversations]
    rows = [row for row in rows if any(label != IGNORE for label in row["labels"][1:])]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch_sum, batch_count = _batch_loss(model, rows[start : start + batch_size], pad)
        total, count = total + batch_sum, count + batch_count
    if not count:
        return None
    loss = total / count
    return HeldOutLoss(loss, math.exp(loss), count)


def _batch_loss(model: Any, rows: list[dict[str, list[int]]], pad: int) -> tuple[float, int]:
    """Summed loss and token count of one batch.

    Padded by hand, on the right: a plain forward (unlike `generate`) numbers positions from the
    left edge, so left padding would shift them. The sum is computed here rather than taken from
    `model(labels=...)`, whose per-batch mean can't be re-weighted across batches of different sizes.
    """
    import torch
    import torch.nn.functional as F

    width = max(len(row["input_ids"]) for row in rows)
    ids = torch.tensor([row["input_ids"] + [pad] * (width - len(row["input_ids"])) for row in rows])
    labels = torch.tensor([row["labels"] + [IGNORE] * (width - len(row["labels"])) for row in rows])
    mask = torch.tensor([[1] * len(row["input_ids"]) + [0] * (width - len(row["input_ids"])) for row in rows])
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    targets = labels[:, 1:].to(device)  # token t is predicted from the tokens before it
    summed = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return float(summed), int((targets != IGNORE).sum())
