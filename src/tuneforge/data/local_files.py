"""Read a user's own JSONL/JSON file into conversations, naming the first bad line if any.

Two shapes for now: {"messages": [{"role", "content"}, ...]} and alpaca-style
{"instruction", "input"?, "output"}. Broader formats come with the dataset issue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

Conversation = list[dict[str, str]]
_ROLES = {"system", "user", "assistant"}


def read_local_file(path: Path) -> list[Conversation]:
    rows = _read_rows(path)
    if not rows:
        raise UserError(f"The dataset file '{path}' is empty. Put one JSON object per line in it.")
    conversations = []
    for where, row in rows:
        conversations.append(_to_messages(row, f"{path}:{where}"))
    return conversations


def _read_rows(path: Path) -> list[tuple[int, Any]]:
    text = path.read_text(encoding="utf-8", errors="strict") if path.stat().st_size else ""
    if path.suffix == ".json":
        return _json_rows(path, text)
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}:{number} is not valid JSON ({exc.msg} at column {exc.colno}). "
                "Each line of a .jsonl file must be one complete JSON object."
            ) from None
    return rows


def _json_rows(path: Path, text: str) -> list[tuple[int, Any]]:
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno} is not valid JSON ({exc.msg}).") from None
    if isinstance(data, dict):  # an object holding one list, e.g. {"data": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]
    return [(index + 1, row) for index, row in enumerate(data)]


def _to_messages(row: Any, where: str) -> Conversation:
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, found {type(row).__name__}.")
    if "messages" in row:
        return _check_messages(row["messages"], where)
    if "instruction" in row and "output" in row:
        prompt = row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"
        return _check_messages(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}], where
        )
    raise UserError(
        f"{where}: no usable fields (found {sorted(row)[:6]}). Each row needs 'messages' "
        "(a list of {role, content}) or 'instruction' and 'output'."
    )


def _check_messages(messages: Any, where: str) -> Conversation:
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects.")
    for turn in messages:
        if not isinstance(turn, dict) or turn.get("role") not in _ROLES or not isinstance(turn.get("content"), str):
            raise UserError(
                f"{where}: each message needs a 'role' (system, user or assistant) and a text 'content'; "
                f"found {json.dumps(turn)[:120]}."
            )
    if not any(t["role"] == "assistant" and t["content"].strip() for t in messages):
        raise UserError(f"{where}: the conversation has no assistant answer to learn from.")
    return [{"role": t["role"], "content": t["content"]} for t in messages]
