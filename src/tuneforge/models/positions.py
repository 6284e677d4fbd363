"""Whether a model can project only some positions onto its vocabulary.

On a CPU the vocabulary projection of every position (49,152 words for SmolLM2) costs as much as
the rest of a short forward, and training and scoring need it only where an answer token is
predicted. transformers' causal LMs take `logits_to_keep`, a count or a position mask; a model
whose forward has no such argument (some remote-code models) gets the full logits instead. The
one home of that test for the trainers' head (recipe/answer_head.py) and held-out scoring
(evaluation/preference.py).
"""

from __future__ import annotations

import inspect
from typing import Any


def takes_position_mask(model: Any) -> bool:
    """Whether `model` (a peft model, a plain one, or a wrapper that forwards to one) takes `logits_to_keep`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    # the class's forward: TRL's fused head replaces the instance's with one that takes **kwargs
    forward = getattr(type(base), "forward", None) or getattr(base, "forward", None)
    if forward is None:
        return False
    try:
        return "logits_to_keep" in inspect.signature(forward).parameters
    except (TypeError, ValueError):  # a builtin or C forward: no signature to read
        return False


def dense_head_input(model: Any) -> None:
    """Give the vocabulary projection its input with plain row-major strides.

    `logits_to_keep=1` (generate's prefill, serve's prompts) hands the head the last position as a
    slice, [1, 1, hidden] with the whole prompt's strides. For bf16 on a CPU, PyTorch's matmul then
    takes a batched path that copies the whole 49,152 × 576 weight first: 89 ms where a plain
    [1, 1, hidden] row takes 3 ms (2-core Xeon with AMX, torch 2.13; fp32 is not affected, 4 ms).
    The prompt of `serve --precision bf16` paid that at every request. A copy of the one row
    costs microseconds, so the hook makes it whenever the strides are not the plain ones.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, _DENSE, False):
        return
    head.register_forward_pre_hook(_densify)
    setattr(head, _DENSE, True)


_DENSE = "_tuneforge_dense_input"


def _densify(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    import torch

    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.stride() == _row_major(x.shape):
        return None
    return (x.clone(memory_format=torch.contiguous_format), *args[1:])


def _row_major(shape: Any) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))
