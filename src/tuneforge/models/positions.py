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
