"""The held-out examples to score: a prompt (every turn before the last answer) and that answer.

Evaluation reads its own file instead of `data.local_files`: rows without a final answer are
skipped and counted here (they can't be scored), where training rejects them outright.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import UserError

Conversation = list[dict[str, str]]


@dataclass
class EvalExample:
    messages: Conversation  # the whole conversation, for the held-out loss
    prompt: Conversation  # what the model sees when it answers
    reference: str  # the answer it should give

    @property
    def question(self) -> str:
        users = [m["content"] for m in self.prompt if m["role"] == "user"]
        return users[-1] if users else ""


def to_examples(conversations: list[Conversation]) -> list[EvalExample]:
    """Keep conversations that end in a non-empty answer to a user turn; that answer is the reference.

    Plain text (one assistant turn, no question) gives nothing to prompt with, so it is left out.
    """
    examples = []
    for messages in conversations:
        *prompt, last = messages or [{}]
        answered = last.get("role") == "assistant" and str(last.get("content", "")).strip()
        if answered and any(turn.get("role") == "user" for turn in prompt):
            examples.append(EvalExample(messages, prompt, last["content"]))
    return examples


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise UserError(
            f"--limit is {limit}, but at least one example is needed. Use --limit 1 or more, or leave it out."
        )


def load_eval_set(path: Path, limit: int | None) -> list[EvalExample]:
    """Read a JSONL of {"messages": [...]} (what `train` saves) or {"instruction", "output"} rows."""
    check_limit(limit)
    if not path.is_file():
        raise UserError(f"The eval set '{path}' does not exist. Pass an existing .jsonl file with --dataset.")
    rows = [_conversation(row, f"{path}:{number}") for number, row in _json_lines(path)]
    examples = to_examples(rows)
    if not examples:
        raise UserError(
            f"The eval set '{path}' has no answers to compare with ({len(rows)} rows, none ending in an "
            'answer to a user question). Each line needs {"messages": [..., {"role": "assistant", '
            '"content": "..."}]} or {"instruction": ..., "output": ...}.'
        )
    return examples[:limit] if limit else examples


def _json_lines(path: Path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}:{number} is not valid JSON ({exc.msg}). Each line must be one JSON object."
            ) from None


def _conversation(row: object, where: str) -> Conversation:
    if isinstance(row, dict) and isinstance(row.get("messages"), list):
        turns = row["messages"]
        if all(
            isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str) for t in turns
        ):
            return [{"role": t["role"], "content": t["content"]} for t in turns]
    if isinstance(row, dict) and "instruction" in row:
        prompt = row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"
        answer = [{"role": "assistant", "content": str(row["output"])}] if row.get("output") else []
        return [{"role": "user", "content": str(prompt)}, *answer]
    raise UserError(
        f'{where}: expected {{"messages": [{{"role", "content"}}, ...]}} or {{"instruction", "output"}}; '
        f"found {json.dumps(row)[:120]}."
    )
