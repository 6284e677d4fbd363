"""The server's limits and their defaults, in one place; `tuneforge serve` flags override them.

Kept free of heavy imports so the CLI can show the defaults in --help cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_tokens_cap: int = 512  # longest answer one request may ask for, in tokens
    queue_size: int = 8  # requests that may wait behind the running one before the server says 429
    max_body_bytes: int = 1_000_000  # far above any prompt that fits a small model's context
