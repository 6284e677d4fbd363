"""Guards `tuneforge data check`, the offline failure of hub presets, and an end-to-end CSV + --data-map training run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import write_tiny_dataset
from tuneforge.cli import app


@pytest.fixture(scope="module")
def qa_csv(tmp_path_factory) -> Path:
    """Real HPO pairs as a spreadsheet export would hold them: question and answer columns."""
    folder = tmp_path_factory.mktemp("csv")
    messages = [
        json.loads(line)["messages"] for line in write_tiny_dataset(folder / "t.jsonl").read_text().splitlines()
    ]
    path = folder / "my.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        writer.writerows([m[0]["content"], m[1]["content"]] for m in messages)
    return path


def check(*args: str):
    return CliRunner().invoke(app, ["data", "check", *args])


def test_data_check_report(qa_csv, tiny_model_dir):
    result = check("--dataset", str(qa_csv), "--data-map", "question=instruction,answer=output",
                   "--model", str(tiny_model_dir), "--max-seq-length", "48", "--val-size", "4", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert (report["format"], report["format_detected"], report["rows"], report["examples"]) == ("alpaca", True, 64, 64)
    assert report["split"] == {"train": 60, "held_out": 4, "how": "--val-size 4"}
    tokens = report["tokens"]
    assert 0 < tokens["min"] <= tokens["median"] <= tokens["p95"] <= tokens["max"]
    assert 0 < report["over_max_length"] < 60 and report["over_max_length_action"] == "truncated"
    pieces = report["example"]["pieces"]
    trained = "".join(p["text"] for p in pieces if p["trained"])
    assert [p["trained"] for p in pieces] == [False, True]
    assert trained.endswith("<|im_end|>\n") and "Please tell me about" in pieces[0]["text"]


def test_data_check_plain_output_marks_trained_tokens(qa_csv, tiny_model_dir):
    result = check("--dataset", str(qa_csv), "--data-map", "question=instruction,answer=output",
                   "--model", str(tiny_model_dir), "--template", "alpaca", "--drop-long", "--max-seq-length", "48")  # fmt: skip
    assert result.exit_code == 0, result.output
    for needle in ("format: alpaca (detected)", "rows: 64 read", "tokens per example: min", "template: alpaca",
                   "dropped", "### Instruction:\nPlease tell me about", "### Response:\n⟦"):  # fmt: skip
        assert needle in result.output, needle


@pytest.mark.parametrize("spec", ["wiki-medical-terms", "medical-flashcards", "alpaca", "some-org/some-dataset"])
def test_hub_datasets_offline_say_needs_internet(monkeypatch, spec):
    monkeypatch.setattr("tuneforge.data.hub.hub_reachable", lambda timeout=3.0: False)  # as on an offline machine
    result = check("--dataset", spec)
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "needs internet:" in message and "Traceback" not in message


WIKI_ROW = {"text": "<s>[INST] What is Bursitis? [/INST] Bursitis is inflammation of a bursa. </s>"}
FLASHCARD_ROW = {
    "instruction": "Answer this question truthfully",
    "input": "What is gout?",
    "output": "A form of arthritis.",
}


@pytest.mark.parametrize(("preset", "row", "expected"), [
    ("wiki-medical-terms", WIKI_ROW, [{"role": "user", "content": "What is Bursitis?"},
                                     {"role": "assistant", "content": "Bursitis is inflammation of a bursa."}]),
    ("medical-flashcards", FLASHCARD_ROW, [{"role": "user", "content": "Answer this question truthfully\n\nWhat is gout?"},
                                          {"role": "assistant", "content": "A form of arthritis."}]),
])  # fmt: skip
def test_online_presets_parse_their_hub_rows(monkeypatch, tmp_path, preset, row, expected):
    """The hub call is replaced by a local dataset folder read with datasets.load_from_disk: no download."""
    import datasets

    from tuneforge.data import load_conversations

    datasets.Dataset.from_list([row] * 3).save_to_disk(tmp_path / "local")
    calls = []

    def local_hub(hub_id, split):
        calls.append((hub_id, split))
        return datasets.load_from_disk(str(tmp_path / "local"))

    monkeypatch.setattr("tuneforge.data.hub.hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", local_hub)
    data = load_conversations(preset)
    assert data.conversations == [expected] * 3 and calls[0][1] == "train"
    assert data.licence and preset in data.source


def test_train_on_a_csv_with_data_map(qa_csv, tiny_model_dir, tmp_path):
    out = tmp_path / "results"
    result = CliRunner().invoke(app, [
        "train", "--model", str(tiny_model_dir), "--dataset", str(qa_csv), "--data-map", "question=instruction,answer=output",
        "--output-dir", str(out), "--max-steps", "12", "--batch-size", "4", "--learning-rate", "5e-3",
        "--max-seq-length", "128", "--eval-examples", "8", "--lora-r", "8", "--lora-alpha", "16", "--lora-dropout", "0",
        "--val-size", "8",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 12 and metrics["train_examples"] == 56
    assert metrics["loss_history"][-1]["loss"] < metrics["loss_history"][0]["loss"]
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    held = [json.loads(line)["messages"] for line in (out / "eval_set.jsonl").read_text().splitlines()]
    assert len(held) == 8 and held[0][0]["content"].startswith("Please tell me about")
