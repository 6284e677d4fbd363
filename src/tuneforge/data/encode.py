"""Turn conversations into token ids and labels that train on the assistant's words only.

We mark the trained tokens ourselves instead of TRL's `assistant_only_loss`: that option needs
`{% generation %}` markers in the chat template, and most templates (SmolLM2's included)
have none. Here the template renders the conversation once; each assistant turn is the text
between "everything before it plus the generation prompt" and "everything through it", and
a token is trained when its characters fall in such a span. The end-of-turn token is inside
the span, so the model learns to stop. Plain-text rows (role 'text') train on every token.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tuneforge.data.chat_render import for_template
from tuneforge.data.formats import TEXT_ROLE
from tuneforge.data.parts import is_trained
from tuneforge.data.templates import CHATML as CHATML_TEMPLATE
from tuneforge.data.templates import chat_template
from tuneforge.errors import UserError

IGNORE = -100
__all__ = ["CHATML_TEMPLATE", "IGNORE", "EncodeStats", "encode_all", "encode_conversation", "render"]


@dataclass
class EncodeStats:
    examples: int = 0
    truncated: int = 0
    dropped: int = 0  # nothing left to learn from after truncation
    dropped_long: int = 0  # over max length, with drop_long
    lengths: list[int] = field(default_factory=list)  # full lengths, before truncation

    def length_summary(self, max_length: int) -> str:
        """'37 examples (0.2%) truncated to 512 tokens': over-long examples are never handled silently."""
        share = lambda n: f"{n} examples ({100 * n / max(self.examples, 1):.1f}%)"
        if self.dropped_long:
            return f"{share(self.dropped_long)} over {max_length} tokens dropped (drop_long)"
        return f"{share(self.truncated)} truncated to {max_length} tokens"


def render(tokenizer: Any, messages: list[dict[str, Any]], generation_prompt: bool, template: str | None = None,
           tools: list[Any] | None = None) -> str:  # fmt: skip
    """The template's text for these turns; reasoning and tool calls are shaped for it first (chat_render)."""
    text = chat_template(tokenizer, template)
    shaped, tools_arg = for_template(messages, text, tools)
    extra = {"tools": tools_arg} if tools_arg else {}
    return str(
        tokenizer.apply_chat_template(
            shaped, tokenize=False, add_generation_prompt=generation_prompt, chat_template=text, **extra
        )
    )


def assistant_spans(
    tokenizer: Any, messages: list[dict[str, Any]], template: str | None = None, tools: list[Any] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the character spans of every trained turn in it.

    An assistant turn's span runs from after its generation prompt through its end-of-turn
    token; another turn marked trained covers its own words. Parts marked untrained are cut out.
    """
    if messages and messages[0]["role"] == TEXT_ROLE:
        text = messages[0]["content"] + (tokenizer.eos_token or "")
        return text, [(0, len(text))]
    full = render(tokenizer, messages, False, template, tools)
    spans: list[tuple[int, int]] = []
    for i, turn in enumerate(messages):
        if not is_trained(turn):
            continue
        assistant = turn["role"] == "assistant"
        before = render(tokenizer, messages[:i], assistant, template, tools) if i else ""
        through = render(tokenizer, messages[: i + 1], False, template, tools)
        if not (full.startswith(through) and through.startswith(before)):
            raise UserError(
                "This model's chat template rewrites earlier turns when a new one is added, so the "
                "answer tokens can't be located. Choose another model, or a template with --template."
            )
        spans += _turn_spans(full, turn, len(before), len(through), assistant)
    return full, spans


def _turn_spans(full: str, turn: dict[str, Any], start: int, end: int, assistant: bool) -> list[tuple[int, int]]:
    """The trained characters of one turn: the whole assistant turn or the words of another, less untrained parts."""
    content = str(turn["content"])
    at = full.find(content, start, end) if content else -1
    untrained = turn.get("untrained") or []
    if at < 0 and (untrained or not assistant):
        raise UserError(
            "This model's chat template changes a message's words as it renders them, so the parts "
            "marked trained or untrained can't be located. Use --template chatml, or drop the train marks."
        )
    spans = [(start, end)] if assistant else [(at, at + len(content))]
    for cut_start, cut_end in untrained:
        spans = _cut(spans, at + cut_start, at + cut_end)
    return spans


def _cut(spans: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    out = []
    for a, b in spans:
        out += [(a, min(b, start))] if a < start else []
        out += [(max(a, end), b)] if b > end else []
    return [(a, b) for a, b in out if a < b]


def encode_conversation(
    tokenizer: Any, messages: list[dict[str, Any]], max_length: int, template: str | None = None
) -> dict[str, Any]:
    """{'input_ids', 'labels', 'full_length'}: labels copy the ids inside trained spans, -100 elsewhere."""
    text, spans = assistant_spans(tokenizer, messages, template, getattr(messages, "tools", None))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = [
        token if any(start < end_ and end > start_ for start_, end_ in spans) else IGNORE
        for token, (start, end) in zip(enc["input_ids"], enc["offset_mapping"])
    ]
    return {"input_ids": enc["input_ids"][:max_length], "labels": labels[:max_length], "full_length": len(labels)}


def encode_all(
    tokenizer: Any, conversations: list[list[dict[str, str]]], max_length: int,
    template: str | None = None, drop_long: bool = False,
) -> tuple[list[dict[str, Any]], EncodeStats]:  # fmt: skip
    """Encode every conversation; count truncated ones (or drop them) and drop those with nothing to learn."""
    stats = EncodeStats()
    return list(iter_encoded(tokenizer, conversations, max_length, stats, template, drop_long)), stats


def iter_encoded(
    tokenizer: Any, conversations: Iterable[list[dict[str, Any]]], max_length: int, stats: EncodeStats,
    template: str | None = None, drop_long: bool = False,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The rows one by one (token_cache.py writes them to Arrow as they come), counting into `stats`."""
    for messages in conversations:
        row = encode_conversation(tokenizer, messages, max_length, template)
        stats.examples += 1
        full = row.pop("full_length")
        stats.lengths.append(full)
        if full > max_length and drop_long:
            stats.dropped_long += 1
            continue
        stats.truncated += full > max_length
        if all(label == IGNORE for label in row["labels"]):
            stats.dropped += 1
            continue
        yield row
