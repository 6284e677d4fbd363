"""What one request asks the model for (Job), what it gets back (Result), and when it stops.

Both serving paths share these: the one-at-a-time path (engine.py, transformers' generate) and
the batched one (batching.py). One home for the stop rules keeps the two paths' answers equal.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """One generation: what to run, and a flag the server sets when the client has gone."""

    model: str
    input_ids: list[int]
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    streamer: Any = None  # transformers' AsyncTextIteratorStreamer, for stream=true
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def greedy(self) -> bool:
        # OpenAI's temperature 0 means greedy; below 0.01 dividing the logits overflows into NaN
        return self.temperature < 0.01


@dataclass
class Result:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length", as in the OpenAI API


class StopText:
    """Does the answer so far hold one of the job's stop sequences?

    transformers' own `stop_strings` also matches text that starts in the prompt (a stop of
    "\\n\\n" fires after one new line when the prompt ends with one); OpenAI's stop looks
    at the answer only, so only the generated tokens are decoded here.
    """

    def __init__(self, job: Job, tokenizer: Any) -> None:
        self.stops, self.tokenizer = job.stop, tokenizer
        # a character may take up to 4 byte-level tokens, so this window holds any stop sequence
        self.window = 4 * max((len(s) for s in job.stop), default=0) + 2

    def hit(self, new_tokens: list[int]) -> bool:
        if not self.stops:
            return False
        text = self.tokenizer.decode(new_tokens[-self.window :], skip_special_tokens=True)
        return any(s in text for s in self.stops)


def finish(job: Job, new: list[int], tokenizer: Any, stop_ids: list[int]) -> Result:
    """The answer's text, cut before a stop sequence, and why it ended."""
    text, stopped = cut_at_stop(tokenizer.decode(new, skip_special_tokens=True), job.stop)
    ended = bool(new) and new[-1] in stop_ids
    reason = "stop" if stopped or ended or len(new) < job.max_new_tokens else "length"
    return Result(text, len(job.input_ids), len(new), reason)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """OpenAI returns the text *before* a stop sequence; generation stops just after it."""
    hits = [text.find(s) for s in stops if s in text]
    return (text[: min(hits)], True) if hits else (text, False)
