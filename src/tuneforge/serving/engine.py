"""One base model with its LoRA adapters: turn a request into tokens, and generate.

peft keeps several adapters on one base (`load_adapter`); adapters.py picks the weights each
forward runs with. The name 'base' runs with every adapter switched off, so the base weights
are loaded once whatever the number of models served. Two ways to generate: `generate` runs
one request alone through transformers' generate() (serve --max-batch 1, today's path), and
`forward` is the one step batching.py calls for many requests at once (a lone request's
decode step through torch.compile with serve --compile: compiled_decode.py). Both run on one
worker thread, so switching the active adapter before a forward is safe.
"""

from __future__ import annotations

from typing import Any

from tuneforge.models.tokenizer import stop_token_ids
from tuneforge.serving.adapters import BASE, AdapterRouter
from tuneforge.serving.errors import OpenAIError
from tuneforge.serving.jobs import Job, Result, StopText, cut_at_stop, finish

__all__ = ["BASE", "Engine", "Job", "Result", "cut_at_stop"]


class Engine:
    """The loaded model, its tokenizer, and the names clients may ask for."""

    def __init__(
        self, model: Any, tokenizer: Any, adapters: list[str], context_length: int, chat_template: str,
        merge: bool = False,
    ) -> None:  # fmt: skip
        self.model = model
        self.router = AdapterRouter(model, adapters, merge)
        self.tokenizer = tokenizer
        self.stop_ids = stop_token_ids(model, tokenizer)  # fixed for the server's life: worked out once
        self.adapters = adapters
        self.context_length = context_length
        self.chat_template = chat_template
        self.compiled: Any = None  # serve --compile: compiled_decode.CompiledDecode

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
        """One request alone through transformers' generate() (serve --max-batch 1). Blocking."""
        import torch
        from transformers import StoppingCriteriaList

        ids = torch.tensor([job.input_ids], dtype=torch.long, device=self.model.device)
        with torch.inference_mode():
            if job.seed is not None:
                torch.manual_seed(job.seed)
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=self._config(job),
                stopping_criteria=StoppingCriteriaList([_ShouldStop(job, self.tokenizer)]), streamer=job.streamer,
                **self.router.prepare([job.model]),
            )  # fmt: skip
        return finish(job, out[0, ids.shape[1] :].tolist(), self.tokenizer, self.stop_ids)

    def forward(self, names: list[str], **inputs: Any) -> Any:
        """One forward for rows that want the models `names` (batching.py); the logits."""
        compiled = self.compiled is not None and self.compiled.takes(names, inputs)
        model = self.compiled.model if compiled else self.model
        return model(**inputs, use_cache=True, **self.router.prepare(names)).logits

    def _config(self, job: Job):
        import copy

        config = copy.deepcopy(self.model.generation_config)
        sample = not job.greedy
        # top_k=0: OpenAI has no top-k, and transformers' default of 50 would change the answers
        config.update(
            max_new_tokens=job.max_new_tokens, min_new_tokens=None, do_sample=sample, top_k=0 if sample else None,
            temperature=job.temperature if sample else None, top_p=job.top_p if sample else None,
            stop_strings=None, eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id,
        )  # fmt: skip
        return config


class _ShouldStop:
    """A stopping criterion for generate(): the client has gone, or the answer holds a stop sequence."""

    def __init__(self, job: Job, tokenizer: Any) -> None:
        self.job, self.stop = job, StopText(job, tokenizer)
        self.start = len(job.input_ids)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = self.job.cancelled.is_set() or bool(self.job.stop) and self.stop.hit(input_ids[0, self.start :].tolist())
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
