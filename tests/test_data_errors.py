"""Guards bad-input errors: exit 2, no traceback, and a message naming file:line and the field; never a crash."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.data import load_conversations
from tuneforge.errors import UserError

U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "a"}
OK = json.dumps({"messages": [U, A]})


def jl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def msgs(*turns) -> dict:
    return {"messages": list(turns)}


# (id, file name, content, extra CLI args, what the message must contain: location first, then field/problem)
BAD = [
    ("broken-json-line", "d.jsonl", jl(OK, OK, '{"messages": [}'), [], ["d.jsonl:3", "not valid JSON"]),
    (
        "broken-json-array",
        "d.json",
        '[\n {"prompt": "q",\n  "completion": "a"},\n {"prompt": }\n]',
        [],
        ["d.json:4", "not valid JSON"],
    ),
    ("json-scalar", "d.json", "42", [], ["d.json:1", "expected a JSON array"]),
    (
        "unknown-fields",
        "d.jsonl",
        jl({"question": "q", "reply": "a"}),
        [],
        ["d.jsonl:1", "question, reply", "--data-map"],
    ),
    ("row-not-object", "d.jsonl", jl(OK, [1, 2]), [], ["d.jsonl:2", "expected an object"]),
    (
        "unknown-role",
        "d.jsonl",
        jl(OK, msgs(U, {"role": "robot", "content": "a"})),
        [],
        ["d.jsonl:2", "field 'messages[1].role'", "unknown role"],
    ),
    (
        "two-user-turns",
        "d.jsonl",
        jl(OK, OK, msgs(U, U, A)),
        [],
        ["d.jsonl:3", "field 'messages[1].role'", "two user turns"],
    ),
    (
        "assistant-first",
        "d.jsonl",
        jl(msgs(A, U, A)),
        [],
        ["d.jsonl:1", "field 'messages[0].role'", "assistant turn before any user"],
    ),
    (
        "assistant-after-system",
        "d.jsonl",
        jl(msgs({"role": "system", "content": "s"}, A)),
        [],
        ["d.jsonl:1", "field 'messages[1].role'", "before any user"],
    ),
    (
        "two-assistant-turns",
        "d.jsonl",
        jl(msgs(U, A, A)),
        [],
        ["d.jsonl:1", "field 'messages[2].role'", "two assistant turns"],
    ),
    (
        "system-in-middle",
        "d.jsonl",
        jl(msgs(U, A, {"role": "system", "content": "s"})),
        [],
        ["d.jsonl:1", "field 'messages[2].role'", "system turn"],
    ),
    ("empty-conversation", "d.jsonl", jl(OK, {"messages": []}), [], ["d.jsonl:2", "field 'messages'", "empty"]),
    (
        "messages-not-list",
        "d.jsonl",
        jl({"messages": "hello"}),
        [],
        ["d.jsonl:1", "field 'messages'", "expected a list"],
    ),
    ("turn-not-object", "d.jsonl", jl({"messages": ["hello", A]}), [], ["d.jsonl:1", "field 'messages[0]'"]),
    (
        "turn-missing-role",
        "d.jsonl",
        jl(msgs({"content": "q"}, A)),
        [],
        ["d.jsonl:1", "field 'messages[0].role'", "missing"],
    ),
    (
        "turn-missing-content",
        "d.jsonl",
        jl(msgs(U, {"role": "assistant"})),
        [],
        ["d.jsonl:1", "field 'messages[1].content'", "missing"],
    ),
    (
        "content-null",
        "d.jsonl",
        jl(msgs(U, {"role": "assistant", "content": None})),
        [],
        ["d.jsonl:1", "field 'messages[1].content'", "expected text"],
    ),
    (
        "sharegpt-unknown-from",
        "d.jsonl",
        jl({"conversations": [{"from": "human", "value": "q"}, {"from": "computer", "value": "a"}]}),
        [],
        ["d.jsonl:1", "field 'conversations[1].from'", "unknown role"],
    ),
    (
        "sharegpt-missing-value",
        "d.jsonl",
        jl({"conversations": [{"from": "human"}, {"from": "gpt", "value": "a"}]}),
        [],
        ["d.jsonl:1", "field 'conversations[0].value'"],
    ),
    (
        "alpaca-missing-output",
        "d.jsonl",
        jl({"instruction": "q", "output": "a"}, {"instruction": "q2"}),
        [],
        ["d.jsonl:2", "field 'output'", "missing"],
    ),
    (
        "alpaca-instruction-number",
        "d.jsonl",
        jl({"instruction": 7, "output": "a"}),
        [],
        ["d.jsonl:1", "field 'instruction'", "expected text"],
    ),
    (
        "alpaca-bad-history",
        "d.jsonl",
        jl({"instruction": "q", "output": "a", "history": [["only one"]]}),
        [],
        ["d.jsonl:1", "field 'history[0]'"],
    ),
    (
        "completion-missing",
        "d.jsonl",
        jl({"prompt": "q", "completion": "a"}, {"prompt": "q"}),
        [],
        ["d.jsonl:2", "field 'completion'"],
    ),
    ("text-not-text", "d.jsonl", jl({"text": {"a": 1}}), [], ["d.jsonl:1", "field 'text'", "expected text"]),
    (
        "llama2-unclosed-inst",
        "d.jsonl",
        jl({"text": "<s>[INST] q [/INST] a </s><s>[INST] q2"}),
        ["--data-format", "llama2-text"],
        ["d.jsonl:1", "field 'text'", "no matching /INST"],
    ),
    ("empty-file", "d.jsonl", "", [], ["d.jsonl", "empty"]),
    ("blank-file", "d.csv", "\n  \n", [], ["d.csv", "empty"]),
    (
        "all-rows-filtered",
        "d.jsonl",
        jl({"prompt": "q", "completion": ""}, {"prompt": "q", "completion": " "}),
        [],
        ["d.jsonl:1", "every row was filtered out"],
    ),
    ("utf16", "d.jsonl", (OK + "\n").encode("utf-16"), [], ["d.jsonl:1", "UTF-16"]),
    ("latin1", "d.csv", "instruction,output\nq,a\ncaf\u00e9,a\n".encode("latin-1"), [], ["d.csv:3", "Latin-1"]),
    (
        "line-over-10mb",
        "d.jsonl",
        OK + "\n" + json.dumps({"text": "x" * (10 * 2**20 + 10)}) + "\n",
        [],
        ["d.jsonl:2", "10 MB"],
    ),
    ("csv-extra-values", "d.csv", "instruction,output\nq,a\nq,a,extra\n", [], ["d.csv:3", "more values"]),
    ("csv-missing-values", "d.csv", "instruction,output\nq,a\nq\n", [], ["d.csv:3", "field 'output'"]),
    (
        "data-map-missing-column",
        "d.csv",
        "question,answer\nq,a\n",
        ["--data-map", "quest=instruction,answer=output"],
        ["d.csv:2", "field 'quest'"],
    ),
    (
        "csv-broken-json-cell",
        "d.csv",
        'messages\n"[{""role"": ""user"""\n',
        [],
        ["d.csv:2", "field 'messages'", "not valid JSON"],
    ),
    (
        "json-object-line-numbers",
        "d.json",
        '{"version": 1,\n "data": [\n  {"prompt": "q", "completion": "a"},\n  {"prompt": "q"}\n]}',
        [],
        ["d.json:4", "field 'completion'"],
    ),
    ("unknown-suffix", "d.xlsx", "anything", [], ["d.xlsx", "unknown file type"]),
    (
        "forced-format-mismatch",
        "d.jsonl",
        jl(OK),
        ["--data-format", "alpaca"],
        ["d.jsonl:1", "field 'instruction'", "missing"],
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "args", "needles"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_bad_file_exits_2_naming_file_line_and_field(tmp_path, monkeypatch, name, content, args, needles):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    monkeypatch.chdir(tmp_path)  # relative names, as users type them
    result = CliRunner().invoke(app, ["data", "check", "--dataset", name, *args])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # the console may wrap long lines
    assert "Traceback" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_bad_rows_in_a_validation_file_name_that_file(tmp_path):
    (tmp_path / "train.jsonl").write_text(jl(OK))
    (tmp_path / "validation.jsonl").write_text(jl(msgs(A)))
    with pytest.raises(UserError, match=r"validation\.jsonl:1: field 'messages\[0\]\.role'"):
        load_conversations(str(tmp_path))


def test_folder_without_a_train_file(tmp_path):
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(UserError, match="needs a train file"):
        load_conversations(str(tmp_path))


def test_parquet_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.Table.from_pylist([{"instruction": "q", "output": "a"}, {"instruction": "q", "output": None}]),
        tmp_path / "d.parquet",
    )
    with pytest.raises(UserError, match=r"d\.parquet:2: field 'output'"):
        load_conversations(str(tmp_path / "d.parquet"))


KEYS = ["messages", "conversations", "role", "content", "from", "value", "instruction", "input", "output",
        "system", "history", "prompt", "completion", "text", "user", "assistant", "human", "gpt"]  # fmt: skip
LEAF = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.sampled_from(KEYS) | st.text(max_size=8)
)
JSON = st.recursive(
    LEAF,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(KEYS), kids, max_size=4),
    max_leaves=12,
)
LINE = JSON.map(json.dumps) | st.text(max_size=20) | st.just("")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINE, max_size=6), suffix=st.sampled_from([".jsonl", ".json"]))
def test_random_jsonl_only_ever_raises_user_error(lines, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"random{suffix}"
        path.write_text("\n".join(lines), encoding="utf-8")
        try:
            data = load_conversations(str(path))
        except UserError as exc:
            assert str(path) in str(exc)
            return
        assert data.conversations and all(turn["content"] is not None for c in data.conversations for turn in c)
