"""Shape reasoning and tool calls for a chat template, natively when it can take them, else in tags.

One home for how training, `data check`, `chat` and `serve` show a template these turns, so the
model is asked at serving time in exactly the words it was trained on.

- Reasoning (`reasoning_content`): a template that reads that field renders its own thinking
  markup; any other gets `<think>…</think>` before the answer, inside the trained span.
- Tool calls: a template that mentions `tools` and `tool_calls` gets the OpenAI form and
  `tools=` from `apply_chat_template`. Any other gets the documented fallback (docs/DATA.md):
  the tools list in the system turn inside `<tools>…</tools>`, each call as JSON
  `{"name": ..., "arguments": {...}}` inside `<tool_call>…</tool_call>` in the assistant's
  words, and tool results as a user turn inside `<tool_response>…</tool_response>` (templates
  without a tool role, such as llama2 or alpaca, only know user and assistant).
"""

from __future__ import annotations

import json
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOLS_INTRO = (
    "You can call these tools. To call one, answer with a JSON object "
    '{"name": ..., "arguments": {...}} between ' + CALL_OPEN + " and " + CALL_CLOSE + " tags."
)


def takes_tools(template: str) -> bool:
    """Whether a chat template renders a tools list and tool calls itself."""
    return "tools" in template and "tool_calls" in template


def takes_reasoning(template: str) -> bool:
    return "reasoning_content" in template


def for_template(
    messages: list[dict[str, Any]], template: str, tools: list[Any] | None = None
) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """(messages, tools for apply_chat_template): unchanged where the template copes, rewritten where not."""
    needs_tools = bool(tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)
    native_tools = takes_tools(template)
    shaped: list[dict[str, Any]] = []
    for message in messages:
        turn = dict(message)
        if turn.get("reasoning_content") and not takes_reasoning(template):
            turn["content"] = f"{THINK_OPEN}\n{turn.pop('reasoning_content')}\n{THINK_CLOSE}\n\n{turn['content']}"
        if needs_tools and not native_tools:
            turn = _fallback_turn(turn)
            if shaped and turn["role"] == "user" and shaped[-1].get("tool_result") and turn.get("tool_result"):
                shaped[-1]["content"] += "\n" + turn["content"]  # parallel results: one user turn
                continue
        shaped.append(turn)
    if tools and not native_tools:
        shaped = _with_tools_in_system(shaped, tools)
    return shaped, (tools if native_tools else None)


def call_json(call: dict[str, Any]) -> str:
    """One tool call as the fallback writes it: {"name": ..., "arguments": {...}}."""
    function = call.get("function", call)
    return json.dumps({"name": function["name"], "arguments": function.get("arguments", {})}, ensure_ascii=False)


def _fallback_turn(turn: dict[str, Any]) -> dict[str, Any]:
    if turn["role"] == "tool":
        return {"role": "user", "content": f"<tool_response>\n{turn['content']}\n</tool_response>", "tool_result": True}
    calls = turn.pop("tool_calls", None)
    if calls:
        blocks = "\n".join(f"{CALL_OPEN}\n{call_json(call)}\n{CALL_CLOSE}" for call in calls)
        turn["content"] = f"{turn['content']}\n{blocks}" if turn["content"] else blocks
    return turn


def tools_text(tools: list[Any]) -> str:
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return f"{TOOLS_INTRO}\n<tools>\n{listed}\n</tools>"


def _with_tools_in_system(messages: list[dict[str, Any]], tools: list[Any]) -> list[dict[str, Any]]:
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0], content=f"{messages[0]['content']}\n\n{tools_text(tools)}")
        return [first, *messages[1:]]
    return [{"role": "system", "content": tools_text(tools)}, *messages]
