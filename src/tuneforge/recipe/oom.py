"""Step the micro-batch down after an out-of-memory error without changing the run.

Recognising the error is machine/memory.py's one rule.

Halving the micro-batch and doubling gradient accumulation keeps the effective batch, so the
updates see the same examples; retry loops that only shrink the batch (accelerate's
find_executable_batch_size, auto_find_batch_size) silently change the run instead.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tuneforge.errors import UserError
from tuneforge.machine.memory import is_out_of_memory

T = TypeVar("T")


@dataclass(frozen=True)
class BatchShape:
    micro_batch: int
    grad_accum: int

    def halved(self) -> BatchShape:
        """The largest proper divisor of the micro-batch: half of an even one, 1 for a prime one (5 -> 1 × 5)."""
        smaller = next(d for d in range(self.micro_batch // 2, 0, -1) if self.micro_batch % d == 0)
        return BatchShape(smaller, self.grad_accum * (self.micro_batch // smaller))

    def describe(self) -> str:
        return f"micro-batch {self.micro_batch} × accumulation {self.grad_accum} = {self.micro_batch * self.grad_accum}"


def step_down(shape: BatchShape, step: int, device: str, max_seq_length: int) -> BatchShape:
    """The next shape with the same effective batch, or a UserError once a micro-batch of 1 ran out of memory too."""
    if shape.micro_batch <= 1:
        raise UserError(
            f"Out of memory on {device} at step {step} even with a micro-batch of 1 (train.batch_size). "
            f"Lower --max-seq-length (now {max_seq_length}), turn on --gradient-checkpointing in the config, "
            "use --load-in-4bit on CUDA, close other programs, or pick a smaller --model. "
            "Progress up to the last checkpoint is kept: run the same command again to resume."
        )
    return shape.halved()


def unless_out_of_memory(measure: Callable[[], T], log: Any, skipped: str, device: str) -> T | None:
    """A figure around training (held-out loss, the before/after check) is not worth the run:
    on out-of-memory it is skipped with a log line and None; any other error still raises."""
    try:
        return measure()
    except Exception as exc:  # noqa: BLE001 - only out-of-memory is absorbed
        if not is_out_of_memory(exc):
            raise
    log.info(skipped)
    free_memory(device)
    return None


def free_memory(device: str) -> None:
    """Drop what the failed step held; callers must have let go of the exception (its frames pin tensors)."""
    import torch

    gc.collect()
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and torch.backends.mps.is_available():
        torch.mps.empty_cache()
