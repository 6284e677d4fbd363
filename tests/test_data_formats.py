"""Guards reading every data format from every file type, folders, saved datasets, --data-map and --data-format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tuneforge.config import DataSection
from tuneforge.data import load_conversations
from tuneforge.data.split import split_heldout

SYSTEM = "You explain medical terms."
Q1, A1, Q2, A2 = "Please tell me about Bursitis.", "Inflammation of a bursa.", "And gout?", "A form of arthritis."
TWO_TURNS = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": Q1}, {"role": "assistant", "content": A1},
             {"role": "user", "content": Q2}, {"role": "assistant", "content": A2}]  # fmt: skip
ONE_TURN = [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}]

# format -> (rows as the user has them, the conversation each row must become)
CASES = {
    "messages": ([{"messages": TWO_TURNS}], TWO_TURNS),
    "sharegpt": ([{"conversations": [{"from": "system", "value": SYSTEM}, {"from": "human", "value": Q1},
                                     {"from": "gpt", "value": A1}, {"from": "human", "value": Q2},
                                     {"from": "gpt", "value": A2}]}], TWO_TURNS),
    "alpaca": ([{"instruction": Q2, "input": "", "output": A2, "system": SYSTEM, "history": [[Q1, A1]]}], TWO_TURNS),
    "prompt-completion": ([{"prompt": Q1, "completion": A1}], ONE_TURN),
    "text": ([{"text": "Bursitis is inflammation of a bursa."}], [{"role": "text", "content": "Bursitis is inflammation of a bursa."}]),
    "llama2-text": ([{"text": f"<s>[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{Q1} [/INST] {A1} </s><s>[INST] {Q2} [/INST] {A2} </s>"}], TWO_TURNS),
}  # fmt: skip


def write(path: Path, rows: list[dict]) -> Path:
    """Write rows the way a user's tool would: nested values become JSON text in CSV/TSV cells."""
    suffix = path.suffix if path.suffix != ".json" else ".json"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.name.endswith(".obj.json"):
        path.write_text(json.dumps({"version": 1, "data": rows}, indent=2), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    elif suffix in (".csv", ".tsv"):
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns, delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows({k: v if isinstance(v, str) else json.dumps(v) for k, v in r.items()} for r in rows)
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".obj.json", ".csv", ".tsv", ".parquet"])
@pytest.mark.parametrize("fmt", list(CASES))
def test_each_format_in_each_file_type(tmp_path, fmt, suffix):
    rows, expected = CASES[fmt]
    path = write(tmp_path / f"data{suffix}", rows * 3)
    data = load_conversations(str(path))
    assert data.format == fmt
    assert data.conversations == [expected] * 3


def test_txt_is_plain_text_one_example_per_paragraph(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("First paragraph,\nstill the first.\n\nSecond one.\n\n\n", encoding="utf-8")
    data = load_conversations(str(path))
    assert data.format == "text"
    assert [c[0]["content"] for c in data.conversations] == ["First paragraph,\nstill the first.", "Second one."]


def test_data_map_renames_columns(tmp_path):
    path = write(tmp_path / "my.csv", [{"question": Q1, "answer": A1, "id": "7"}])
    data = load_conversations(str(path), DataSection(dataset=str(path), map="question=instruction,answer=output"))
    assert data.format == "alpaca" and data.conversations == [ONE_TURN]


def test_data_map_from_yaml_mapping_and_bad_targets():
    assert DataSection(map={"q": "prompt", "a": "completion"}).map == {"q": "prompt", "a": "completion"}
    with pytest.raises(ValueError, match="not a field"):
        DataSection(map="q=question")
    with pytest.raises(ValueError, match="yourcolumn=ourfield"):
        DataSection(map="q")


def test_data_format_overrides_detection(tmp_path):
    """A text column holding [INST] is parsed into turns by default; --data-format text keeps it plain."""
    rows, _ = CASES["llama2-text"]
    path = write(tmp_path / "d.jsonl", rows)
    data = load_conversations(str(path), DataSection(dataset=str(path), format="text"))
    assert data.format == "text" and data.conversations[0][0]["content"].startswith("<s>[INST]")


def test_rows_with_empty_answers_are_skipped_and_counted(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"instruction": Q1, "output": A1}, {"instruction": Q2, "output": "  "}])
    data = load_conversations(str(path))
    assert (data.rows, data.skipped, len(data.conversations)) == (2, 1, 1)


@pytest.mark.parametrize("held_name", ["validation.csv", "test.jsonl"])
def test_folder_with_train_and_validation_files(tmp_path, held_name):
    write(tmp_path / "train.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(10)])
    write(tmp_path / held_name, [{"prompt": "held", "completion": "out"}])
    data = load_conversations(str(tmp_path))
    train, held = split_heldout(data.conversations, 0.5, 1, seed=0)
    assert len(train) == 10 and held == [[{"role": "user", "content": "held"}, {"role": "assistant", "content": "out"}]]
    assert data.validation_source.endswith(held_name)


@pytest.mark.parametrize(("val_size", "held"), [(0.2, 4), (3, 3)])
def test_val_size_is_a_fraction_or_a_count(tmp_path, val_size, held):
    path = write(tmp_path / "d.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(20)])
    data = load_conversations(str(path), DataSection(dataset=str(path), val_size=val_size))
    train, heldout = split_heldout(data.conversations, 0.02, 200, seed=1)
    assert (len(train), len(heldout)) == (20 - held, held)
    assert not {json.dumps(c) for c in train} & {json.dumps(c) for c in heldout}


def test_saved_dataset_folder_loads_through_datasets(tmp_path):
    """The hub path, offline: a DatasetDict written by save_to_disk, read with load_from_disk."""
    import datasets

    rows, expected = CASES["sharegpt"]
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(rows * 4),
        "validation": datasets.Dataset.from_list([{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}]),
    }).save_to_disk(tmp_path / "saved")  # fmt: skip
    data = load_conversations(str(tmp_path / "saved"))
    assert data.format == "sharegpt" and data.conversations == [expected] * 4
    assert data.conversations.heldout == [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]
