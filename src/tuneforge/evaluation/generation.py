"""Greedy answers for many prompts at once: left padding, prompts of similar length batched together.

Left padding puts every prompt's last token in the same column, so all rows of a batch start
generating at the same step; `generate` derives positions from the attention mask, so the pad
tokens change nothing. Sorting prompts by length before cutting batches keeps padding small.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tuneforge.data.encode import render
from tuneforge.evaluation import defaults
from tuneforge.models.tokenizer import stop_token_ids


@dataclass
class Generation:
    text: str
    tokens: int  # answer length in tokens, without the end-of-turn token
    stopped: bool  # ended by itself (end-of-turn token) before max_new_tokens


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, str]]],
    max_new_tokens: int,
    batch_size: int = defaults.BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> list[Generation]:
    """One greedy answer per prompt, in the prompts' order."""
    texts = [render(tokenizer, messages, generation_prompt=True) for messages in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    answers: dict[int, Generation] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = _generate_batch(model, tokenizer, [texts[i] for i in chunk], max_new_tokens)
        answers.update(zip(chunk, batch, strict=True))
        if on_batch:
            on_batch(len(chunk))
    return [answers[i] for i in range(len(texts))]


def _generate_batch(model: Any, tokenizer: Any, texts: list[str], max_new_tokens: int) -> list[Generation]:
    import torch
    from transformers import GenerationConfig

    stops = stop_token_ids(model, tokenizer)
    # A fresh config, not the model's: a sampling default (temperature, top_p) must never leak in.
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
        eos_token_id=stops, pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0],
    )  # fmt: skip
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    finally:
        tokenizer.padding_side = side
    with torch.no_grad():
        out = model.generate(**enc, generation_config=config)
    return [_decode(tokenizer, row.tolist(), stops) for row in out[:, enc["input_ids"].shape[1] :]]


def _decode(tokenizer: Any, new_ids: list[int], stops: list[int]) -> Generation:
    """Cut at the first end-of-turn token; what follows it is padding from finished rows."""
    end = next((i for i, token in enumerate(new_ids) if token in stops), None)
    kept = new_ids if end is None else new_ids[:end]
    return Generation(tokenizer.decode(kept, skip_special_tokens=True).strip(), len(kept), end is not None)
