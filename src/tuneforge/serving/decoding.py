"""A batch of sequences decoding together: one forward per token for all of them.

Each request is prefilled alone (its prompt, batch of one, its own KV cache, started from the
opening it shares with an earlier prompt: prefix_cache.py), then joins the running batch
between two decode steps. Joining left-pads the shorter of the two caches with
masked columns, so every row's newest token sits in the last column and one forward serves
all rows. A row's positions count only its own tokens, so the rotary embedding of each row is
what it would be alone. Finished rows leave at once (`drop`), and the columns that only the
leavers needed are cut off the front, so a long answer that ended doesn't keep its cache.

The model is called directly with a reused cache, not through `generate()` once per request:
generate() builds its logits processors, stopping criteria and cache every call, and it can't
take a row in or out between steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tuneforge.serving.jobs import Job, Result, StopText, finish
from tuneforge.serving.prefix_cache import PrefixCache


@dataclass
class Row:
    """One request in the batch: its job, the tokens so far, and its own random stream."""

    job: Job
    stop: StopText
    generator: Any = None  # torch.Generator when sampling, so a seed gives the same answer in any batch
    new: list[int] = field(default_factory=list)


class Batch:
    """The rows decoding together, their shared left-padded KV cache, mask and positions."""

    def __init__(self, model: Any, tokenizer: Any, stop_ids: list[int]) -> None:
        self.model, self.tokenizer, self.stop_ids = model, tokenizer, set(stop_ids)
        self.rows: list[Row] = []
        self.cache: Any = None
        self.mask: Any = None  # [rows, columns] 1 for a real token, 0 for padding
        self.positions: Any = None  # [rows] the position of each row's next token
        self.last: Any = None  # [rows, 1] each row's newest token, the next step's input
        self.prefixes = PrefixCache(model.config)  # prompts' shared openings, prefilled once

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, job: Job, forward: Callable[..., Any]) -> tuple[bool, Result | None]:
        """Prefill the job's prompt alone, pick its first token, and add it to the batch.

        (True, result) when that first token already ends the answer, and the row never joins.
        """
        import torch

        ids = torch.tensor([job.input_ids], dtype=torch.long, device=self.model.device)
        cache, shared = self.prefixes.start(job.model, job.input_ids)  # the opening another prompt already had
        # logits_to_keep=1: only the last prompt position is read; the vocabulary projection of
        # every prompt position would cost as much as the rest of the prefill
        logits = forward([job.model], input_ids=ids[:, shared:], attention_mask=torch.ones_like(ids), cache=cache,
                         position_ids=torch.arange(shared, ids.shape[1], device=ids.device)[None], logits_to_keep=1)  # fmt: skip
        if not shared:
            self.prefixes.remember(job.model, job.input_ids, cache)
        row = Row(job, StopText(job, self.tokenizer), _generator(job))
        if job.streamer is not None:
            job.streamer.put(ids[0].cpu())  # skip_prompt drops this first put: it lets the streamer count the prompt
        token = pick([row], logits[:, -1])
        ended, result = self._record(row, token[0])
        if not ended:
            self._merge(row, cache, torch.ones_like(ids), torch.tensor([ids.shape[1]], device=ids.device), token)
        return ended, result

    def step(self, forward: Callable[..., Any]) -> None:
        """One token for every row."""
        import torch

        self.mask = torch.cat([self.mask, torch.ones_like(self.last)], dim=1)
        logits = forward(
            [row.job.model for row in self.rows], input_ids=self.last, attention_mask=self.mask,
            position_ids=self.positions[:, None], cache=self.cache,
        )  # fmt: skip
        self.positions = self.positions + 1
        self.last = pick(self.rows, logits[:, -1])

    def harvest(self) -> list[tuple[Row, Result | None]]:
        """Record each row's newest token; the rows that are done leave, with their results."""
        done: list[tuple[Row, Result | None]] = []
        keep: list[int] = []
        for index, row in enumerate(self.rows):
            ended, result = self._record(row, self.last[index])
            if ended:
                done.append((row, result))
            else:
                keep.append(index)
        if done:
            self._keep(keep)
        return done

    def _record(self, row: Row, token: Any) -> tuple[bool, Result | None]:
        """Add a token to a row's answer and stream it; (ended, result), None for a client that has gone."""
        row.new.append(int(token))
        job = row.job
        if job.streamer is not None:
            job.streamer.put(token.cpu())
        if job.cancelled.is_set():
            ended, result = True, None
        elif row.new[-1] in self.stop_ids or len(row.new) >= job.max_new_tokens or row.stop.hit(row.new):
            ended, result = True, finish(job, row.new, self.tokenizer, sorted(self.stop_ids))
        else:
            return False, None
        if job.streamer is not None:
            job.streamer.end()
        return ended, result

    def _merge(self, row: Row, cache: Any, mask: Any, positions: Any, token: Any) -> None:
        import torch

        if not self.rows:
            self.rows, self.cache, self.mask, self.positions, self.last = [row], cache, mask, positions, token
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)])
        self.mask = torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(mask, width, dim=1)])
        self.positions = torch.cat([self.positions, positions])
        self.last = torch.cat([self.last, token])
        self.rows.append(row)

    def _keep(self, indices: list[int]) -> None:
        import torch

        if not indices:
            self.rows, self.cache, self.mask, self.positions, self.last = [], None, None, None, None
            return
        self.rows = [self.rows[i] for i in indices]
        index = torch.tensor(indices, device=self.mask.device)
        mask = self.mask[index]
        start = int(mask.any(dim=0).nonzero()[0])  # columns left of this are padding for every row left
        self.mask, self.positions, self.last = mask[:, start:], self.positions[index], self.last[index]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]


def pick(rows: list[Row], logits: Any) -> Any:
    """The next token of each row: argmax when greedy, else OpenAI's temperature and top_p, no top-k."""

    chosen = logits.argmax(dim=-1)
    for index, row in enumerate(rows):
        if not row.job.greedy:
            chosen[index] = _sample(row, logits[index : index + 1].float())
    return chosen[:, None]


def _sample(row: Row, logits: Any) -> Any:
    import torch
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    scores = TemperatureLogitsWarper(row.job.temperature)(None, logits)
    if row.job.top_p < 1.0:
        scores = TopPLogitsWarper(row.job.top_p)(None, scores)
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=row.generator)[0, 0]


def _generator(job: Job) -> Any:
    import torch

    if job.greedy:
        return None
    generator = torch.Generator()
    generator.manual_seed(job.seed if job.seed is not None else int(torch.randint(0, 2**62, (1,))))
    return generator


def _left_pad(tensor: Any, width: int, dim: int = 2) -> Any:
    """Zeros on the left of `dim` up to `width`; the mask's zeros keep them out of attention."""
    import torch

    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
