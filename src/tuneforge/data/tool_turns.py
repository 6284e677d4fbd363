"""Tool-calling rows, in OpenAI's form and in ShareGPT's, read into one shape.

OpenAI: an assistant message with `tool_calls` ([{"type": "function", "function": {"name",
"arguments": "<JSON text>"}}]), then `{"role": "tool", "content": ...}` results, and a `tools`
list on the row. ShareGPT (LLaMA-Factory, the glaive demo): a `function_call` turn whose value
is the call as JSON, an `observation` turn with the result, and a `tools` column (often JSON text).

Both become an assistant turn `{"role": "assistant", "content": "", "tool_calls": [{"type":
"function", "function": {"name": ..., "arguments": {...}}}]}` and `{"role": "tool", ...}` turns,
and the row's tools ride on the conversation (`Chat.tools`). Arguments are parsed here, so a call
whose arguments are not JSON stops the run at its file and line, not deep inside a template.
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.errors import UserError

TOOL_ROLES = ("tool", "observation", "function", "ipython")
CALL_ROLES = ("function_call", "tool_call")


class Chat(list):
    """A conversation (a list of turns) that may carry the tools it was given."""

    tools: list[Any] | None = None


def _bad(where: str, name: str, problem: str) -> UserError:
    return UserError(f"{where}: field '{name}': {problem}", field=name)


def _json(value: Any, where: str, name: str, what: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise _bad(where, name, f"{what} is not valid JSON ({exc.msg} at column {exc.colno}): "
                   f"{value[:80]!r}. Write it as a JSON object, e.g. {{\"city\": \"Seoul\"}}.") from None  # fmt: skip


def one_call(call: Any, where: str, name: str) -> dict[str, Any]:
    """A call in OpenAI's shape ({"function": {...}}) or the bare {"name", "arguments"}, normalised."""
    if not isinstance(call, dict):
        raise _bad(
            where, name, f"expected a tool call object with a name and arguments, found {json.dumps(call)[:60]}."
        )
    function = call.get("function", call)
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise _bad(where, f"{name}.name", "missing. A tool call needs the name of the tool it calls.")
    arguments = _json(function.get("arguments", {}), where, f"{name}.arguments", "the tool call's arguments")
    if not isinstance(arguments, dict):
        raise _bad(
            where, f"{name}.arguments", f"expected a JSON object of arguments, found {json.dumps(arguments)[:60]}."
        )
    out: dict[str, Any] = {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def read_calls(value: Any, where: str, name: str) -> list[dict[str, Any]]:
    """An OpenAI `tool_calls` list, or a ShareGPT function_call value (one call or a list, as JSON text)."""
    value = _json(value, where, name, "the tool call")
    calls = value if isinstance(value, list) else [value]
    if not calls:
        raise _bad(where, name, "the list of tool calls is empty. Drop the field or add a call.")
    return [one_call(call, where, f"{name}[{index}]") for index, call in enumerate(calls)]


def read_tools(row: dict[str, Any], where: str) -> list[Any] | None:
    """The row's `tools` (a list, or JSON text as LLaMA-Factory's datasets store it)."""
    value = row.get("tools")
    if value in (None, "", []):
        return None
    tools = _json(value, where, "tools", "the tools list")
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise _bad(where, "tools", "expected a list of tool descriptions (JSON objects with a name and parameters).")
    return tools


def check_tool_turn(turns: list[dict[str, Any]], index: int, where: str, name: str) -> None:
    """A tool result must answer a call: the turn before it is an assistant's tool call or another result."""
    previous = turns[index - 1] if index else None
    if previous is None or not (previous.get("tool_calls") or previous["role"] == "tool"):
        raise _bad(where, name, "a tool turn with no call before it. A tool result must follow the assistant's "
                   "tool call (tool_calls, or a ShareGPT function_call turn); add the call or drop the result.")  # fmt: skip
