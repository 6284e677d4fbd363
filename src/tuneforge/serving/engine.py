"""One base model with its LoRA adapters: turn a request into tokens, and generate.

peft keeps several adapters on one base (`load_adapter`) and switches between them with
`set_adapter`. The name 'base' runs with every adapter switched off, so the base weights are
loaded once whatever the number of models served. Generation runs one request at a time on
a worker thread (see request_queue.py). That is why switching the active adapter per request
is safe.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

from tuneforge.models.tokenizer import stop_token_ids
from tuneforge.serving.errors import OpenAIError

BASE = "base"


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


@dataclass
class Result:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length", as in the OpenAI API


class Engine:
    """The loaded model, its tokenizer, and the names clients may ask for."""

    def __init__(
        self, model: Any, tokenizer: Any, adapters: list[str], context_length: int, chat_template: str
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = stop_token_ids(model, tokenizer)  # fixed for the server's life: worked out once
        self.adapters = adapters
        self.context_length = context_length
        self.chat_template = chat_template

    @property
    def names(self) -> list[str]:
        return [BASE, *self.adapters]

    def check_model(self, name: str) -> None:
        if name not in self.names:
            raise OpenAIError(
                404, f"The model '{name}' does not exist on this server. Available: {', '.join(self.names)}.",
                param="model", code="model_not_found",
            )  # fmt: skip

    def chat_ids(self, messages: list[dict[str, Any]], tools: list[Any] | None = None) -> list[int]:
        """Render through transformers' chat template, which runs Jinja in a sandbox (tools: see tool_calls.py)."""
        try:
            return list(self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                chat_template=self.chat_template, **({"tools": tools} if tools else {}),
            )["input_ids"])  # fmt: skip
        except Exception as exc:  # noqa: BLE001  a model's template may raise anything, e.g. 'roles must alternate'
            raise OpenAIError(
                400, f"This model's chat template refused the messages: {exc}", param="messages"
            ) from None

    def text_ids(self, prompt: str) -> list[int]:
        ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if ids:
            return ids
        # an empty prompt starts from the start-of-text token, as OpenAI's models do with <|endoftext|>
        start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        if start is None:
            raise OpenAIError(
                400, "The prompt is empty, and this model has no start token to begin from.", param="prompt"
            )
        return [start]

    def plan_tokens(self, prompt_tokens: int, requested: int | None, cap: int, default: int, param: str) -> int:
        """How many tokens to generate; the errors carry the numbers so users can fix the request."""
        room = self.context_length - prompt_tokens
        if room <= 0:
            raise OpenAIError(
                400, f"The prompt is {prompt_tokens} tokens, but this model's context is {self.context_length} tokens. "
                "Shorten the prompt or the conversation.", param=param, code="context_length_exceeded",
            )  # fmt: skip
        if requested is None:
            return min(default, cap, room)
        if requested > cap:
            raise OpenAIError(
                400, f"max_tokens is {requested}, over this server's cap of {cap} (tuneforge serve --max-tokens-cap).",
                param="max_tokens", code="invalid_value",
            )  # fmt: skip
        if requested > room:
            raise OpenAIError(
                400, f"This model's maximum context length is {self.context_length} tokens. However, you requested "
                f"{prompt_tokens + requested} tokens ({prompt_tokens} in the prompt, {requested} for the completion). "
                "Shorten the prompt or lower max_tokens.", param=param, code="context_length_exceeded",
            )  # fmt: skip
        return requested

    def generate(self, job: Job) -> Result:
        """Blocking: runs on the worker thread. Stops early when the client has gone."""
        import torch
        from transformers import StoppingCriteriaList

        ids = torch.tensor([job.input_ids], dtype=torch.long, device=self.model.device)
        with torch.inference_mode(), self._active(job.model):
            if job.seed is not None:
                torch.manual_seed(job.seed)
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=self._config(job),
                stopping_criteria=StoppingCriteriaList([_ShouldStop(job, self.tokenizer)]), streamer=job.streamer,
            )  # fmt: skip
        new = out[0, ids.shape[1] :].tolist()
        text, stopped = cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=True), job.stop)
        ended = bool(new) and new[-1] in self.stop_ids
        finish = "stop" if stopped or ended or len(new) < job.max_new_tokens else "length"
        return Result(text, len(job.input_ids), len(new), finish)

    def _active(self, name: str):
        if not self.adapters:
            return contextlib.nullcontext()
        if name == BASE:
            return self.model.disable_adapter()
        self.model.set_adapter(name)
        return contextlib.nullcontext()

    def _config(self, job: Job):
        import copy

        config = copy.deepcopy(self.model.generation_config)
        # OpenAI's temperature 0 means greedy; below 0.01 dividing the logits overflows into NaN
        sample = job.temperature >= 0.01
        # top_k=0: OpenAI has no top-k, and transformers' default of 50 would change the answers
        config.update(
            max_new_tokens=job.max_new_tokens, min_new_tokens=None, do_sample=sample, top_k=0 if sample else None,
            temperature=job.temperature if sample else None, top_p=job.top_p if sample else None,
            stop_strings=None, eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id,
        )  # fmt: skip
        return config


class _ShouldStop:
    """A stopping criterion: the client has gone, or the new text holds a stop sequence.

    transformers' own `stop_strings` also matches text that starts in the prompt (a stop of
    "\\n\\n" fires after one new line when the prompt ends with one); OpenAI's stop looks
    at the answer only, so only the generated tokens are decoded here.
    """

    def __init__(self, job: Job, tokenizer: Any) -> None:
        self.job, self.tokenizer = job, tokenizer
        self.start = len(job.input_ids)
        # a character may take up to 4 byte-level tokens, so this window holds any stop sequence
        self.window = 4 * max((len(s) for s in job.stop), default=0) + 2

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = self.job.cancelled.is_set()
        if self.job.stop and not done:
            tail = input_ids[0, self.start :][-self.window :].tolist()
            text = self.tokenizer.decode(tail, skip_special_tokens=True)
            done = any(s in text for s in self.job.stop)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """OpenAI returns the text *before* a stop sequence; generation stops just after it."""
    hits = [text.find(s) for s in stops if s in text]
    return (text[: min(hits)], True) if hits else (text, False)
