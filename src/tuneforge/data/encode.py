"""Turn conversations into token ids and labels that train on the assistant's words only.

We mark the trained tokens ourselves instead of TRL's `assistant_only_loss`: that option needs
`{% generation %}` markers in the chat template, and most templates (SmolLM2's included)
have none. Here the template renders the conversation once; each assistant turn is the text
between "everything before it plus the generation prompt" and "everything through it", and
a token is trained when its characters fall in such a span. The end-of-turn token is inside
the span, so the model learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuneforge.errors import UserError

IGNORE = -100
# Used only when a tokenizer has no chat template of its own (a base model).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class EncodeStats:
    examples: int = 0
    truncated: int = 0
    dropped: int = 0
    lengths: list[int] = field(default_factory=list)


def render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    template = tokenizer.chat_template or CHATML_TEMPLATE
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt, chat_template=template
    )


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the character spans of every assistant turn in it."""
    full = render(tokenizer, messages, generation_prompt=False)
    spans = []
    for i, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        through = render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (full.startswith(through) and through.startswith(before)):
            raise UserError(
                "This model's chat template rewrites earlier turns when a new one is added, so the "
                "answer tokens can't be located. Choose another model or a plain template."
            )
        spans.append((len(before), len(through)))
    return full, spans


def encode_conversation(tokenizer: Any, messages: list[dict[str, str]], max_length: int) -> dict[str, list[int]]:
    """{'input_ids', 'labels'}: labels copy the ids inside assistant spans and are -100 elsewhere."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = [
        token if any(start < end_ and end > start_ for start_, end_ in spans) else IGNORE
        for token, (start, end) in zip(enc["input_ids"], enc["offset_mapping"])
    ]
    return {"input_ids": enc["input_ids"][:max_length], "labels": labels[:max_length], "full_length": len(labels)}


def encode_all(tokenizer: Any, conversations: list[list[dict[str, str]]], max_length: int):
    """Encode every conversation; count the truncated ones and drop those left with nothing to learn."""
    rows, stats = [], EncodeStats()
    for messages in conversations:
        row = encode_conversation(tokenizer, messages, max_length)
        stats.examples += 1
        stats.lengths.append(min(row["full_length"], max_length))
        stats.truncated += row.pop("full_length") > max_length
        if all(label == IGNORE for label in row["labels"]):
            stats.dropped += 1
            continue
        rows.append(row)
    return rows, stats
