"""The server's limits and their defaults, in one place; `tuneforge serve` flags override them.

The request caps come from the config's serve section; the body cap is a fixed guard.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.config import ServeSection

_FIELDS = ServeSection.model_fields  # the defaults live once, in the config


@dataclass(frozen=True)
class Limits:
    max_tokens_cap: int = _FIELDS["max_tokens_cap"].default
    queue_size: int = _FIELDS["queue_size"].default
    max_batch: int = _FIELDS["max_batch"].default
    max_body_bytes: int = 1_000_000  # far above any prompt that fits a small model's context
