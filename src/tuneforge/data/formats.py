"""Turn one row of any supported shape into a conversation, or say which field of which line is wrong.

| format | a row looks like |
| messages | {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]} |
| sharegpt | {"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]} |
| alpaca | {"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]} |
| prompt-completion | {"prompt": ..., "completion": ...} |
| text | {"text": ...}: plain language modelling, every token trained |
| llama2-text | {"text": "<s>[INST] question [/INST] answer </s>"}: parsed back into turns |
"""

from __future__ import annotations

import json
import re
from typing import Any

from tuneforge.data.parts import has_answer, read_content, train_flag
from tuneforge.data.tool_turns import CALL_ROLES, TOOL_ROLES, Chat, check_tool_turn, read_calls, read_tools
from tuneforge.errors import UserError

Conversation = list[dict[str, Any]]
FORMATS = ("messages", "sharegpt", "alpaca", "prompt-completion", "text", "llama2-text")
REQUIRED = {"messages": ("messages",), "sharegpt": ("conversations",), "alpaca": ("instruction", "output"),
            "prompt-completion": ("prompt", "completion"), "text": ("text",), "llama2-text": ("text",)}  # fmt: skip
SHAPES = "'messages', 'conversations', 'instruction'+'output', 'prompt'+'completion' or 'text'"
TEXT_ROLE = "text"  # a conversation [{"role": "text", ...}] is plain text: every token is trained
ROLE_ALIASES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
                "model": "assistant", "bot": "assistant", "chatgpt": "assistant",
                **dict.fromkeys(TOOL_ROLES, "tool"), **dict.fromkeys(CALL_ROLES, "assistant")}  # fmt: skip


def bad(where: str, field: str, problem: str) -> UserError:
    """Every row error reads 'file:line: field 'x': problem', so users can jump straight to it."""
    return UserError(f"{where}: field '{field}': {problem}", field=field)


def apply_map(row: Any, mapping: dict[str, str], where: str) -> Any:
    """Rename the user's columns to ours (--data-map question=instruction,answer=output)."""
    if not mapping or not isinstance(row, dict):
        return row
    row = dict(row)
    for source, target in mapping.items():
        if source not in row:
            raise bad(where, source, f"missing, but --data-map maps it to '{target}'. The row has: "
                      f"{', '.join(map(str, list(row)[:8]))}. Fix the column name in --data-map.")  # fmt: skip
        row[target] = row.pop(source)
    return row


def detect_format(row: Any, where: str) -> str:
    """The format of a row from its keys; the first row decides for the whole file."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object with named fields, found {type(row).__name__}.")
    keys = set(row)
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if {"prompt", "completion"} <= keys:
        return "prompt-completion"
    if "text" in keys:
        return "llama2-text" if "[/INST]" in str(row["text"]) else "text"
    raise UserError(
        f"{where}: can't tell the format from the fields {', '.join(map(str, sorted(keys))) or '(none)'}. "
        f"Expected {SHAPES}. "
        f"Rename your columns with --data-map yourcolumn=output,... or pick one with --data-format {{{','.join(FORMATS)}}}.",
        field="format",
    )


def to_conversation(row: Any, fmt: str, where: str) -> Conversation | None:
    """The row as a conversation; None when it has nothing to learn from (empty answer or text)."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object with named fields, found {type(row).__name__}.")
    missing = [name for name in REQUIRED[fmt] if name not in row]
    if missing:
        raise bad(where, missing[0], f"missing. Rows are read in the {fmt} format, which needs "
                  f"{' and '.join(REQUIRED[fmt])}; this row has: {', '.join(map(str, list(row)[:8])) or 'nothing'}. "
                  f"Formats: {SHAPES}. Rename columns with --data-map yourcolumn=ourfield.")  # fmt: skip
    convert = {"messages": _messages, "sharegpt": _sharegpt, "alpaca": _alpaca,
               "prompt-completion": _prompt_completion, "text": _text, "llama2-text": _llama2_text}[fmt]  # fmt: skip
    conversation = Chat(convert(row, where))
    conversation.tools = read_tools(row, where)
    if conversation[0]["role"] == TEXT_ROLE:
        return conversation if conversation[0]["content"].strip() else None
    check_order(conversation, where, "messages" if fmt in ("messages", "prompt-completion") else fmt)
    return conversation if any(has_answer(t) for t in conversation) else None


def _field(row: dict, name: str, where: str, optional: bool = False) -> Any:
    if name not in row or (optional and row[name] is None):
        if optional:
            return None
        raise bad(where, name, f"missing. The row has: {', '.join(map(str, list(row)[:8])) or '(nothing)'}. "
                  "Rename a column with --data-map yourcolumn=" + name + ".")  # fmt: skip
    return row[name]


def _text_of(value: Any, where: str, field: str) -> str:
    """A field that must be text: a string, or content parts in either spelling (text or value)."""
    if value is not None and not isinstance(value, (str, list)):
        raise bad(where, field, f"expected text, found {json.dumps(value, default=str)[:80]}.")
    return read_content(value, where, field).text


def _turns(value: Any, where: str, field: str, role_key: str, content_key: str) -> Conversation:
    value = _json_cell(value, where, field)
    if not isinstance(value, list):
        raise bad(where, field, f"expected a list of turns, found {type(value).__name__}.")
    if not value:
        raise bad(where, field, "the conversation is empty. Remove the row or add a user and an assistant turn.")
    turns = []
    for index, turn in enumerate(value):
        name = f"{field}[{index}]"
        if not isinstance(turn, dict):
            raise bad(where, name, f"each turn must be an object with '{role_key}' and '{content_key}'.")
        role = turn.get(role_key)
        if role is None:
            raise bad(where, f"{name}.{role_key}", "missing. Each turn needs a role (system, user or assistant).")
        if not isinstance(role, str) or role.lower() not in ROLE_ALIASES:
            raise bad(where, f"{name}.{role_key}", f"unknown role {json.dumps(role)[:40]}. Use system, user, "
                      "assistant or tool (ShareGPT: system, human, gpt, function_call or observation).")  # fmt: skip
        if content_key not in turn:
            raise bad(where, f"{name}.{content_key}", "missing. Each turn needs its text.")
        if role.lower() in CALL_ROLES:  # ShareGPT: the call itself is the turn's value, as JSON
            calls = read_calls(turn[content_key], where, f"{name}.{content_key}")
            turns.append({"role": "assistant", "content": "", "tool_calls": calls})
            continue
        turns.append(_turn(ROLE_ALIASES[role.lower()], turn, where, name, content_key))
    return turns


def _turn(role: str, turn: dict, where: str, name: str, content_key: str) -> dict[str, Any]:
    """{'role', 'content'} plus, when the row says so, 'train', 'untrained' ranges and 'reasoning_content'."""
    value = turn[content_key]
    content = read_content("" if value is None and turn.get("tool_calls") else value, where, f"{name}.{content_key}")
    out: dict[str, Any] = {"role": role, "content": content.text}
    if turn.get("tool_calls"):
        out["tool_calls"] = read_calls(turn["tool_calls"], where, f"{name}.tool_calls")
    flag = train_flag(turn, where, name)
    if flag is not None:
        out["train"] = flag
    if content.untrained:
        out["untrained"] = [list(span) for span in content.untrained]
    reasoning = turn.get("reasoning_content") or content.reasoning
    if reasoning:
        out["reasoning_content"] = _text_of(reasoning, where, f"{name}.reasoning_content")
    return out


def _json_cell(value: Any, where: str, field: str) -> Any:
    """A CSV/TSV cell can only hold text, so lists arrive there as JSON strings."""
    if not (isinstance(value, str) and value.lstrip().startswith("[")):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise bad(where, field, f"the cell looks like a JSON list but is not valid JSON ({exc.msg}).") from None


def check_order(turns: Conversation, where: str, field: str) -> None:
    """An optional system turn first, then user and assistant taking turns, the user first."""
    expected = "user"
    for index, turn in enumerate(turns):
        role, name = turn["role"], f"{field}[{index}].role"
        if role == "system":
            if index:
                raise bad(where, name, "a system turn may only come first. Move it to the start or drop it.")
            continue
        if role == "tool":
            check_tool_turn(turns, index, where, name)
            expected = "assistant"
            continue
        if index and role == "assistant" and turns[index - 1].get("tool_calls"):
            raise bad(where, name, "the assistant's tool call has no tool result after it. Add the result "
                      "(role tool, or a ShareGPT observation turn) before the next assistant turn.")  # fmt: skip
        if role != expected:
            if role == "assistant" and not any(t["role"] == "user" for t in turns[:index]):
                raise bad(where, name, "the conversation has an assistant turn before any user turn. "
                          "Start with the user's question (after an optional system turn).")  # fmt: skip
            raise bad(where, name, f"two {role} turns in a row. Merge them, or put the other side's turn between them.")
        expected = "assistant" if role == "user" else "user"


def _messages(row: dict, where: str) -> Conversation:
    return _turns(_field(row, "messages", where), where, "messages", "role", "content")


def _sharegpt(row: dict, where: str) -> Conversation:
    value = _json_cell(_field(row, "conversations", where), where, "conversations")
    first = value[0] if isinstance(value, list) and value else None
    keys = ("role", "content") if isinstance(first, dict) and "role" in first else ("from", "value")
    return _turns(value, where, "conversations", *keys)


def _alpaca(row: dict, where: str) -> Conversation:
    instruction = _text_of(_field(row, "instruction", where), where, "instruction")
    extra = _field(row, "input", where, optional=True)
    prompt = f"{instruction}\n\n{_text_of(extra, where, 'input')}" if extra else instruction
    turns = []
    system = _field(row, "system", where, optional=True)
    if system:
        turns.append({"role": "system", "content": _text_of(system, where, "system")})
    history = _json_cell(_field(row, "history", where, optional=True), where, "history") or []
    if not isinstance(history, list):
        raise bad(where, "history", "expected a list of [question, answer] pairs.")
    for index, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise bad(where, f"history[{index}]", "expected a [question, answer] pair of texts.")
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    output = _text_of(_field(row, "output", where), where, "output")
    return turns + [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def _prompt_completion(row: dict, where: str) -> Conversation:
    """Plain strings, or TRL's conversational form where both are lists of messages."""
    prompt, completion = _field(row, "prompt", where), _field(row, "completion", where)
    head = _turns(prompt, where, "prompt", "role", "content") if isinstance(prompt, list) else \
        [{"role": "user", "content": _text_of(prompt, where, "prompt")}]  # fmt: skip
    tail = _turns(completion, where, "completion", "role", "content") if isinstance(completion, list) else \
        [{"role": "assistant", "content": _text_of(completion, where, "completion")}]  # fmt: skip
    return head + tail


def _text(row: dict, where: str) -> Conversation:
    return [{"role": TEXT_ROLE, "content": _text_of(_field(row, "text", where), where, "text")}]


_SYSTEM = re.compile(r"^\s*<<SYS>>(.*?)<</SYS>>", re.DOTALL)


def _llama2_text(row: dict, where: str) -> Conversation:
    """'<s>[INST] <<SYS>>s<</SYS>> q [/INST] a </s><s>[INST] q2 [/INST] a2 </s>' back into turns."""
    text = _text_of(_field(row, "text", where), where, "text").replace("<s>", "").replace("</s>", "")
    head, *chunks = text.split("[INST]")
    if head.strip() or not chunks:
        raise bad(
            where,
            "text",
            "expected Llama-2 chat text: <s>, then INST and /INST markers in square brackets "
            "around each question, then the answer and </s>.",
        )  # no literal closing tag: rich reads it as markup
    turns: list[dict[str, str]] = []
    for chunk in chunks:
        question, marker, answer = chunk.partition("[/INST]")
        if not marker:
            raise bad(where, "text", "an INST marker has no matching /INST marker after it.")
        system = _SYSTEM.match(question)
        if system and not turns:
            turns.append({"role": "system", "content": system.group(1).strip()})
            question = question[system.end() :]
        turns += [{"role": "user", "content": question.strip()}, {"role": "assistant", "content": answer.strip()}]
    return turns
