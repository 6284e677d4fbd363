"""Message content given as a list of parts, and which of a message is trained.

Peers write a message's content either as text or as parts: OpenAI's
`[{"type": "text", "text": ...}]`, LLaMA-Factory's `[{"type": "text", "value": ...}]`, and
reasoning parts (`{"type": "reasoning", "text": ...}`, also spelled "thinking"). A part the
model can't take (an image, audio, video) is an error naming its type: silently dropping it
would train answers about a picture the model never saw.

Training control, per message or per part: `"train": false` or `"loss_weight": 0` keeps it out
of the loss, `"loss_weight": 1` (or `"train": true`) puts it in. A fractional weight is refused:
the labels here are a mask (trained or not), and a weighted loss would change TRL's loss for
every row, which no peer reproduces the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tuneforge.errors import UserError

TEXT_TYPES = ("text", "input_text", "output_text")
REASONING_TYPES = ("reasoning", "thinking")
MEDIA_TYPES = ("image", "image_url", "input_image", "audio", "input_audio", "video", "video_url", "file")


@dataclass
class Content:
    """A message's text, the character ranges of it that are not trained, and its reasoning."""

    text: str = ""
    untrained: list[tuple[int, int]] = field(default_factory=list)
    reasoning: str = ""


def _bad(where: str, name: str, problem: str) -> UserError:
    return UserError(f"{where}: field '{name}': {problem}", field=name)


def read_content(value: Any, where: str, name: str) -> Content:
    """Text, or a list of parts in either spelling; errors name the file, the line and the part."""
    if isinstance(value, str):
        return Content(value)
    if not isinstance(value, list):
        raise _bad(
            where, name, f"expected text or a list of content parts, found {json.dumps(value, default=str)[:80]}."
        )
    content = Content()
    for index, part in enumerate(value):
        _add_part(content, part, where, f"{name}[{index}]")
    return content


def _add_part(content: Content, part: Any, where: str, name: str) -> None:
    if isinstance(part, str):
        content.text += part
        return
    if not isinstance(part, dict):
        raise _bad(
            where,
            name,
            f'expected a content part such as {{"type": "text", "text": ...}}, found {json.dumps(part)[:60]}.',
        )
    kind = str(part.get("type", "text"))
    if kind in MEDIA_TYPES or kind not in (*TEXT_TYPES, *REASONING_TYPES):
        what = "this model trains on text only" if kind in MEDIA_TYPES else "it is not a part type tuneforge reads"
        raise _bad(where, f"{name}.type", f"part type '{kind}' can't be trained: {what}. Text parts are "
                   "{\"type\": \"text\", \"text\": ...} (or \"value\"), reasoning parts {\"type\": \"reasoning\", "
                   "\"text\": ...}. Remove the part, or describe it in text.")  # fmt: skip
    text = next((part[key] for key in ("text", "value", kind) if isinstance(part.get(key), str)), None)
    if text is None:
        raise _bad(where, name, f"a '{kind}' part needs its words in \"text\" (or \"value\"); it has "
                   f"{', '.join(map(str, part)) or 'nothing'}.")  # fmt: skip
    if kind in REASONING_TYPES:
        content.reasoning += text
        return
    if train_flag(part, where, name) is False:
        content.untrained.append((len(content.text), len(content.text) + len(text)))
    content.text += text


def train_flag(item: dict[str, Any], where: str, name: str) -> bool | None:
    """True or False when the message or part says whether it is trained, None when it doesn't say."""
    flag = item.get("train")
    if flag is not None and not isinstance(flag, bool):
        raise _bad(where, f"{name}.train", f"expected true or false, found {json.dumps(flag)[:40]}.")
    weight = item.get("loss_weight")
    if weight is None:
        return flag
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight not in (0, 1):
        raise _bad(where, f"{name}.loss_weight", f"{json.dumps(weight)[:40]} is not supported: tuneforge trains a "
                   "message or leaves it out, so loss_weight must be 0 (not trained) or 1 (trained). A "
                   "fractional weight (a weighted loss) is not built in; round it, or repeat the examples "
                   "that should count more.")  # fmt: skip
    if flag is not None and flag != bool(weight):
        raise _bad(where, name, f'"train": {json.dumps(flag)} and "loss_weight": {weight} disagree. Keep one.')
    return bool(weight)


def is_trained(turn: dict[str, Any]) -> bool:
    """The one rule: assistant turns are trained unless marked otherwise; other turns only when marked."""
    return bool(turn.get("train", turn["role"] == "assistant"))


def has_answer(turn: dict[str, Any]) -> bool:
    """A trained turn with something in it: words, reasoning or a tool call."""
    return is_trained(turn) and bool(
        str(turn["content"]).strip() or turn.get("reasoning_content") or turn.get("tool_calls")
    )
