"""Preference rows of any common shape as one pair (or one KTO example), or the file:line and field that is wrong.

| shape | a row looks like |
| trl | {"prompt": text or turns, "chosen": text or turns, "rejected": text or turns} (prompt optional with turns) |
| sharegpt | {"conversations": [...], "chosen": {"from": "gpt", "value": ...}, "rejected": {...}} (LLaMA-Factory) |
| alpaca | {"instruction", "input"?, "chosen", "rejected"} or {"instruction", "output": [chosen, rejected]} |
| kto | {"prompt", "completion", "label": true/false}: unpaired, KTO only |

A pair is {"prompt": [turns, ending with the user's], "chosen": text, "rejected": text}; a
KTO example is {"prompt": [turns], "completion": text, "label": bool}. Every row is checked
here, before any model loads: a pair whose sides are equal teaches nothing, a missing side
or a label that is not a boolean would fail mid-run.
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.data.formats import _json_cell, _text_of, _turns, apply_map, bad, check_order
from tuneforge.errors import UserError

Pair = dict[str, Any]
PAIRED = ("dpo", "orpo")
NEEDS = (
    "a preference file needs, per row: 'prompt', 'chosen' and 'rejected' (TRL; text or conversations), "
    "or 'conversations' with 'chosen' and 'rejected' turns (LLaMA-Factory ShareGPT), or 'instruction' with "
    "'chosen' and 'rejected' (LLaMA-Factory alpaca); KTO also reads 'prompt', 'completion' and a true/false 'label'"
)


def detect_preference_format(row: Any, where: str, method: str) -> str:
    """trl, sharegpt, alpaca or kto from the first row's keys; an SFT-only row is an error naming the columns."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object with named fields, found {type(row).__name__}.")
    keys = set(row)
    if {"chosen", "rejected"} & keys or (keys >= {"instruction", "output"} and isinstance(row["output"], list)):
        if "conversations" in keys:
            return "sharegpt"
        return "alpaca" if "instruction" in keys else "trl"
    if {"completion", "label"} <= keys:
        if method != "kto":
            raise UserError(f"{where}: the rows are unpaired KTO examples (prompt, completion, label), which only "
                            f"--method kto can learn from; --method {method} needs pairs. {NEEDS}.", field="train.method")  # fmt: skip
        return "kto"
    raise UserError(
        f"{where}: --method {method} needs preference data, but the row has only "
        f"{', '.join(map(str, sorted(keys))) or '(no fields)'}, which is SFT data. {NEEDS}. "
        "Train on it with --method sft, or rename columns with --data-map.",
        field="data.dataset",
    )


def to_pair(row: Any, fmt: str, where: str) -> Pair:
    """One row as a pair (or a KTO example), checked."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object with named fields, found {type(row).__name__}.")
    if fmt == "kto":
        return _kto(row, where)
    prompt, chosen, rejected = {"trl": _trl, "sharegpt": _sharegpt, "alpaca": _alpaca}[fmt](row, where)
    if not chosen.strip():
        raise bad(where, "chosen", "empty. A pair needs a preferred answer; fill it in or remove the row.")
    if not rejected.strip():
        raise bad(where, "rejected", "empty. A pair needs a rejected answer; fill it in or remove the row.")
    if chosen.strip() == rejected.strip():
        raise bad(where, "rejected", "equals 'chosen', so the pair prefers nothing. Give a different rejected "
                  "answer or remove the row.")  # fmt: skip
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _side(row: dict, name: str, where: str) -> Any:
    if name not in row or row[name] is None:
        raise bad(where, name, f"missing. {NEEDS[0].upper()}{NEEDS[1:]}; this row has: "
                  f"{', '.join(map(str, list(row)[:8])) or 'nothing'}.")  # fmt: skip
    return _json_cell(row[name], where, name)


def _prompt_turns(value: Any, where: str, field: str) -> list[dict[str, str]]:
    if isinstance(value, list):
        turns = _turns(value, where, field, "role", "content")
    else:
        turns = [{"role": "user", "content": _text_of(value, where, field)}]
    check_order(turns, where, field)
    if turns[-1]["role"] != "user":
        raise bad(where, field, "must end with the user's turn: the answers being compared come next.")
    return turns


def _answer(value: Any, where: str, field: str) -> str:
    """A side as text: a plain string, or turns whose last one is the assistant's answer."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = ("role", "content") if "role" in value[0] else ("from", "value")
        turns = _turns(value, where, field, *keys)
        if turns[-1]["role"] != "assistant":
            raise bad(where, field, "the last turn must be the assistant's answer.")
        return turns[-1]["content"]
    return _text_of(value, where, field)


def _trl(row: dict, where: str) -> tuple[list[dict[str, str]], str, str]:
    chosen, rejected = _side(row, "chosen", where), _side(row, "rejected", where)
    if "prompt" in row:
        return _prompt_turns(_side(row, "prompt", where), where, "prompt"), *_answers(chosen, rejected, where)
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise bad(where, "prompt", f"missing. {NEEDS[0].upper()}{NEEDS[1:]}.")
    # TRL's implicit prompt: both sides are whole conversations that share every turn but the last
    full_chosen = _turns(chosen, where, "chosen", "role", "content")
    full_rejected = _turns(rejected, where, "rejected", "role", "content")
    if len(full_chosen) < 2 or full_chosen[:-1] != full_rejected[:-1]:
        raise bad(where, "rejected", "without a 'prompt', chosen and rejected must be conversations that share "
                  "every turn but the last. Add a 'prompt' column.")  # fmt: skip
    prompt = full_chosen[:-1]
    check_order(prompt, where, "chosen")
    return prompt, _answer(full_chosen[-1:], where, "chosen"), _answer(full_rejected[-1:], where, "rejected")


def _answers(chosen: Any, rejected: Any, where: str) -> tuple[str, str]:
    return _answer(chosen, where, "chosen"), _answer(rejected, where, "rejected")


def _sharegpt(row: dict, where: str) -> tuple[list[dict[str, str]], str, str]:
    value = _side(row, "conversations", where)
    first = value[0] if isinstance(value, list) and value else None
    keys = ("role", "content") if isinstance(first, dict) and "role" in first else ("from", "value")
    turns = _turns(value, where, "conversations", *keys)
    if row.get("system"):
        turns = [{"role": "system", "content": _text_of(row["system"], where, "system")}, *turns]
    check_order(turns, where, "conversations")
    if turns[-1]["role"] != "user":
        raise bad(where, "conversations", "must end with the user's turn: 'chosen' and 'rejected' answer it.")
    return turns, *_answers(_side(row, "chosen", where), _side(row, "rejected", where), where)


def _alpaca(row: dict, where: str) -> tuple[list[dict[str, str]], str, str]:
    instruction = _text_of(_side(row, "instruction", where), where, "instruction")
    extra = row.get("input")
    prompt = f"{instruction}\n\n{_text_of(extra, where, 'input')}" if extra else instruction
    turns = [{"role": "system", "content": _text_of(row["system"], where, "system")}] if row.get("system") else []
    turns.append({"role": "user", "content": prompt})
    if "chosen" not in row and isinstance(row.get("output"), list):  # older LLaMA-Factory: output = [chosen, rejected]
        if len(row["output"]) != 2:
            raise bad(where, "output", "a ranked pair needs exactly two answers: [chosen, rejected].")
        return turns, *_answers(row["output"][0], row["output"][1], where)
    return turns, *_answers(_side(row, "chosen", where), _side(row, "rejected", where), where)


def _kto(row: dict, where: str) -> Pair:
    prompt = _prompt_turns(_side(row, "prompt", where), where, "prompt")
    completion = _answer(_side(row, "completion", where), where, "completion")
    label = row.get("label")
    if isinstance(label, str) and label.strip().lower() in ("true", "false"):  # CSV cells hold text
        label = label.strip().lower() == "true"
    if not isinstance(label, bool):
        raise bad(where, "label", f"expected true or false (is the completion desirable?), found "
                  f"{json.dumps(label, default=str)[:40]}.")  # fmt: skip
    if not completion.strip():
        raise bad(where, "completion", "empty. Fill it in or remove the row.")
    return {"prompt": prompt, "completion": completion, "label": label}


def convert_pairs(
    rows: list[tuple[str, Any]], fmt: str, mapping: dict[str, str], method: str
) -> tuple[list[Pair], str]:
    """Every row checked and converted; the format is detected from the first row unless given."""
    if not rows:
        raise UserError("The preference dataset is empty. Put at least one pair in it.", field="data.dataset")
    first_where, first = rows[0]
    if fmt not in ("trl", "sharegpt", "alpaca", "kto"):
        fmt = detect_preference_format(apply_map(first, mapping, first_where), first_where, method)
    return [to_pair(apply_map(row, mapping, where), fmt, where) for where, row in rows], fmt


def as_conversation(pair: Pair) -> list[dict[str, str]]:
    """The prompt answered by the chosen side (or a desirable KTO completion): what chat and eval see."""
    answer = pair.get("chosen", pair.get("completion", ""))
    return [*pair["prompt"], {"role": "assistant", "content": answer}]
