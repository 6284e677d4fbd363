"""Tools in a chat request, and tool calls in the answer, in the OpenAI shape.

The request's `tools` and its assistant `tool_calls` / `tool` turns are shown to the model the
way training showed them (`data/chat_render.py`: the template's own tool rendering, else the
`<tool_call>` fallback). The answer is read back here: each `<tool_call>{"name", "arguments"}</tool_call>`
block the model wrote becomes an OpenAI tool call, `{"id", "type": "function", "function":
{"name", "arguments": "<JSON text>"}}`, with `finish_reason` "tool_calls"; the words around the
blocks stay the message's content. A block that is not valid JSON stays text: the client sees
what the model wrote rather than a call it never made.

Kept apart from engine.py on purpose: the engine generates tokens, this module knows tools.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from tuneforge.data.chat_render import CALL_CLOSE, CALL_OPEN, for_template

_BLOCK = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(CALL_CLOSE) + r"|$)", re.DOTALL)


def request_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """The request's messages as template turns: 'developer' as 'system', call arguments as objects."""
    turns = []
    for message in messages:
        turn: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role,
                                "content": message.text()}  # fmt: skip
        if message.tool_calls:
            turn["tool_calls"] = [_template_call(call.model_dump()) for call in message.tool_calls]
        turns.append(turn)
    return turns


def _template_call(call: dict[str, Any]) -> dict[str, Any]:
    """Templates (and the fallback) take arguments as an object; OpenAI sends them as JSON text."""
    function = dict(call["function"])
    try:
        function["arguments"] = json.loads(function["arguments"])
    except (TypeError, ValueError):
        pass  # not JSON: shown as the client sent it
    return {"type": "function", "function": function, **({"id": call["id"]} if call.get("id") else {})}


def prompt_ids(engine: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[int]:
    """Token ids of the prompt, with tools shown natively or in the fallback tags."""
    shaped, native_tools = for_template(messages, engine.chat_template, tools)
    ids: list[int] = engine.chat_ids(shaped, tools=native_tools) if native_tools else engine.chat_ids(shaped)
    return ids


def split_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool calls): the calls the model wrote, in the OpenAI shape, and the words left."""
    calls, kept, last = [], [], 0
    for match in _BLOCK.finditer(text):
        call = _parse(match.group(1))
        if call is None:
            continue
        kept.append(text[last : match.start()])
        last = match.end()
        calls.append(call)
    if not calls:
        return text, []
    content = ("".join(kept) + text[last:]).strip()
    return content or None, calls


def _parse(block: str) -> dict[str, Any] | None:
    try:
        value = json.loads(block)
    except ValueError:
        return None
    if not (isinstance(value, dict) and isinstance(value.get("name"), str)):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": value["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
    }
