"""Prompts that start alike are prefilled once: the KV cache of a shared opening is reused.

Every chat request renders through the same template, so its prompt opens with the same tokens
(SmolLM2's template puts a system turn before the user's words: 28 of a short question's ~40
prompt tokens). A prompt's prefill is most of what a short answer costs the server, so for
each served model this keeps the KV cache of the latest prompt and starts the next one from the
part they share, prefilling only the rest, as vLLM's and llama.cpp's prefix caches do. In exact
arithmetic the result is the same as a whole prefill; in floating point the prefix's rows come
from a different matrix shape, the same kind of difference batching already makes.

Only for caches made of plain dynamic layers (no sliding window); anything else prefills whole.
"""

from __future__ import annotations

from typing import Any

MIN_SHARED = 8  # fewer shared tokens than this are not worth copying a cache for


class PrefixCache:
    """Per served model: the latest whole-prefilled prompt's ids and its keys and values per layer."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.kept: dict[str, tuple[list[int], list[tuple[Any, Any]]]] = {}

    def start(self, model: str, ids: list[int]) -> tuple[Any, int]:
        """A cache holding the longest kept opening of `ids` (at least one token is left to prefill), and its length."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.config)
        kept = self.kept.get(model)
        shared = _shared_length(kept[0], ids) if kept else 0
        shared = min(shared, len(ids) - 1)
        if kept is None or shared < MIN_SHARED:
            return cache, 0
        for index, (keys, values) in enumerate(kept[1]):
            cache.update(keys[:, :, :shared].clone(), values[:, :, :shared].clone(), index)
        return cache, shared

    def remember(self, model: str, ids: list[int], cache: Any) -> None:
        """Keep a prompt prefilled whole (not started from a kept one), so the next prompts can share it."""
        from transformers.cache_utils import DynamicLayer

        if all(type(layer) is DynamicLayer for layer in cache.layers):
            self.kept[model] = (list(ids), [(layer.keys, layer.values) for layer in cache.layers])


def _shared_length(a: list[int], b: list[int]) -> int:
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count
