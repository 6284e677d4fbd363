"""Guards preference tuning: every pair shape reads the same, bad pairs stop before a model loads, DPO/ORPO/KTO learn."""

from __future__ import annotations

import json

import pytest

from tests.conftest import tiny_train_values
from tuneforge.data.preferences import convert_pairs
from tuneforge.errors import UserError

PROMPT = [{"role": "user", "content": "Please tell me about fever."}]
PAIR = {"prompt": PROMPT, "chosen": "Elevated body temperature.", "rejected": "Low body temperature."}
SHAPES = {
    "trl strings": {"prompt": "Please tell me about fever.", "chosen": "Elevated body temperature.",
                    "rejected": "Low body temperature."},
    "trl turns": {"prompt": PROMPT, "chosen": [{"role": "assistant", "content": "Elevated body temperature."}],
                  "rejected": [{"role": "assistant", "content": "Low body temperature."}]},
    "trl implicit prompt": {"chosen": [*PROMPT, {"role": "assistant", "content": "Elevated body temperature."}],
                            "rejected": [*PROMPT, {"role": "assistant", "content": "Low body temperature."}]},
    "llama-factory sharegpt": {"conversations": [{"from": "human", "value": "Please tell me about fever."}],
                               "chosen": {"from": "gpt", "value": "Elevated body temperature."},
                               "rejected": {"from": "gpt", "value": "Low body temperature."}},
    "llama-factory alpaca": {"instruction": "Please tell me about fever.", "chosen": "Elevated body temperature.",
                             "rejected": "Low body temperature."},
    "alpaca ranked output": {"instruction": "Please tell me about fever.",
                             "output": ["Elevated body temperature.", "Low body temperature."]},
}  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
def test_every_pair_shape_reads_as_the_same_pair(shape):
    pairs, _ = convert_pairs([("p.jsonl:1", SHAPES[shape])], "auto", {}, "dpo")
    assert pairs == [PAIR]


def test_bad_pairs_name_the_line_and_field():
    kto = {"prompt": "q", "completion": "a", "label": True}
    assert convert_pairs([("k.jsonl:1", kto)], "auto", {}, "kto")[0] == [
        {"prompt": [{"role": "user", "content": "q"}], "completion": "a", "label": True}
    ]
    cases = [
        (
            {**SHAPES["trl strings"], "rejected": "Elevated body temperature."},
            "dpo",
            "field 'rejected': equals 'chosen'",
        ),
        ({"prompt": "q", "chosen": "a"}, "dpo", "field 'rejected': missing"),
        ({**kto, "label": "maybe"}, "kto", "field 'label': expected true or false"),
        (kto, "dpo", "only --method kto can learn from"),
        ({"instruction": "q", "output": "a"}, "orpo", "needs preference data"),
    ]
    for row, method, needle in cases:
        with pytest.raises(UserError) as caught:
            convert_pairs([("f.jsonl:7", row)], "auto", {}, method)
        assert "f.jsonl:7" in str(caught.value) and needle in str(caught.value), (needle, str(caught.value))


def test_dpo_on_an_sft_file_exits_2_naming_the_columns(tmp_path, tiny_dataset, tiny_model_dir, monkeypatch):
    """Before any model loads, and with no traceback."""
    from typer.testing import CliRunner

    from tuneforge import cli
    from tuneforge.models import loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("a model loaded"))
    args = ["train", "--method", "dpo", "--dataset", str(tiny_dataset), "--model", str(tiny_model_dir),
            "--output-dir", str(tmp_path / "r")]  # fmt: skip
    result = CliRunner().invoke(cli.app, args)
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "Traceback" not in message, message
    for needle in (f"{tiny_dataset}:1", "SFT data", "'prompt', 'chosen' and 'rejected'", "--method sft"):
        assert needle in message, (needle, message)


def test_data_check_shows_one_pair_with_the_scored_tokens(tmp_path, tiny_model_dir, capsys):
    from tuneforge.commands.data_check import run_data_check

    data = preference_file(tmp_path / "prefs.jsonl", count=8)
    values = {"train.method": "kto", "data.dataset": str(data), "model.name": str(tiny_model_dir), "data.val_size": 4}
    report = run_data_check(values)
    pair = report["pair"]
    assert report["format"] == "trl" and report["split"] == {"train": 4, "held_out": 4}
    assert pair["prompt"]["text"].endswith("<|im_start|>assistant\n") and pair["chosen"]["tokens"] > 5
    assert pair["rejected"]["text"] == "I do not know, sorry. Ask someone else about it.<|im_end|>\n"
    assert "⟦I do not know, sorry." in capsys.readouterr().out


def test_medical_preferences_pairs_each_term_with_a_sibling():
    """One pair per medical-terms row, same order and question, so both presets hold out the same terms."""
    from tuneforge.data.hpo import hpo_obo_path, read_terms, term_to_messages
    from tuneforge.data.hpo_pairs import build_pairs, parents_of

    path = hpo_obo_path()
    terms = read_terms(path)
    parents = parents_of(path.read_text(encoding="utf-8"))
    pairs = build_pairs(terms, parents)
    assert len(pairs) == len(terms) > 16000
    by_definition = {t["definition"]: t["id"] for t in terms}
    siblings = 0
    for term, pair in zip(terms[:500], pairs[:500]):
        assert pair["prompt"] == term_to_messages(term)[:1] and pair["chosen"] == term["definition"]
        assert pair["rejected"] != pair["chosen"]
        siblings += bool(set(parents[by_definition[pair["rejected"]]]) & set(parents[term["id"]]))
    assert siblings > 450  # the rest take a parent's sibling


def preference_file(path, count=64):
    """Real HPO definitions as chosen; a fixed evasive answer as rejected, which a tiny model can learn to avoid."""
    from tuneforge.data.hpo_pairs import load_medical_preferences

    pairs = [p for p in load_medical_preferences()[0] if len(p["chosen"]) < 160][:count]
    with path.open("w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps({**pair, "rejected": "I do not know, sorry. Ask someone else about it."}) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dpo", "orpo", "kto"])
def test_each_method_learns_the_preference(method, tmp_path, tiny_model_dir, monkeypatch):
    """ORPO and KTO also meet an out-of-memory step (DPO's is in test_full_finetune.py): they step down and learn on."""
    from tests.test_oom import inject_oom
    from tuneforge.commands.train import run_train

    data, out = preference_file(tmp_path / "prefs.jsonl"), tmp_path / "results"
    overrides = {"train.method": method, "train.learning_rate": 2e-2, "train.max_steps": 16, "data.val_size": 16}
    if method == "kto":  # and DoRA (peft's use_dora) through the same path
        overrides["train.finetune"] = "dora"
    raised = inject_oom(monkeypatch, at_step=6, while_micro_batch_above=2) if method != "dpo" else []
    metrics = run_train(tiny_train_values(tiny_model_dir, data, out, **overrides))
    if method != "dpo":  # back to checkpoint-6, then micro-batch 2 with 2 accumulated: the same batch per step
        assert raised == [4] and metrics["oom_step_downs"] == [{"step": 7, "from": 4, "to": 2, "grad_accum": 2}]
    losses = [h["loss"] for h in metrics["loss_history"]]
    assert losses[-1] < losses[0], losses
    log = "\n".join(p.read_text() for p in out.glob("training_log_*.log"))
    said = [line.split(" ", 2)[-1] for line in log.splitlines()]  # without the time stamp
    assert said.count("== data ==") == 1 and sum(s.startswith(("LoRA:", "DoRA:")) for s in said) == 1, log
    before, after = metrics["preference"]["before"], metrics["preference"]["after"]
    if method == "orpo":  # its SFT term moves first: 16 tiny steps lower the chosen answers' loss
        assert metrics["eval_loss_after"] < metrics["eval_loss_before"], metrics
    else:
        assert after["margin"] > before["margin"] + 1 and after["accuracy"] >= before["accuracy"], (before, after)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["method"] == method and saved["preference"]["after"] == after
    held = [json.loads(line) for line in (out / "eval_pairs.jsonl").read_text().splitlines()]
    assert len(held) == 16 and set(held[0]) == {"prompt", "chosen", "rejected"}
    assert json.loads((out / "eval_set.jsonl").read_text().splitlines()[0])["messages"][-1]["role"] == "assistant"
    assert json.loads((out / "adapter_config.json").read_text())["use_dora"] == (method == "kto")
    card = (out / "README.md").read_text()
    assert f"| method | {method} |" in card and "held-out preference accuracy (16 pairs)" in card
    if method == "dpo":  # `tuneforge eval` reports the same pairs, base (adapter disabled) against tuned
        from tuneforge.commands.evaluate import run_eval

        result = run_eval(out, limit=2, max_new_tokens=4)
        assert result["preference"]["tuned"]["accuracy"] == pytest.approx(after["accuracy"])
        report = (out / "eval" / "report.md").read_text()
        assert "preference accuracy (16 held-out pairs)" in report and "accuracy per answer token" in report
    assert "accuracy per token" in log and saved["preference"]["after"]["accuracy_per_token"] is not None


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dpo", "orpo", "kto"])
def test_a_killed_run_of_each_method_resumes_to_the_same_adapter(method, tmp_path, tiny_model_dir):
    """SIGKILL of a real DPO, ORPO or KTO process after its first checkpoint: the same command resumes to the
    uninterrupted run's adapter and losses; a changed method is refused with the drift table."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.conftest import adapter_diff
    from tests.test_ddp import _as_yaml
    from tuneforge.commands.train import run_train

    data = preference_file(tmp_path / "prefs.jsonl", count=40)
    run = {"train.method": method, "train.max_steps": 8, "train.save_steps": 4, "lora.dropout": 0.1,
           "train.logging_steps": 1, "data.val_size": 8}  # fmt: skip
    reference, out = tmp_path / "reference", tmp_path / "results"
    run_train(tiny_train_values(tiny_model_dir, data, reference, **run))
    config = _as_yaml(tiny_train_values(tiny_model_dir, data, out, **run), tmp_path / f"{method}.yaml")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "tuneforge", "train", "--config", str(config)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "checkpoint-4").is_dir() and time.monotonic() < deadline:
        time.sleep(0.01)  # committed by one rename (runs/checkpoint_store.py): whole, or not there
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert not (out / "metrics.json").exists(), "the run finished before it was killed"
    other = "orpo" if method != "orpo" else "dpo"
    with pytest.raises(UserError) as changed:
        run_train(tiny_train_values(tiny_model_dir, data, out, **{**run, "train.method": other}))
    assert "train.method" in str(changed.value) and method in str(changed.value) and other in str(changed.value)
    metrics = run_train(tiny_train_values(tiny_model_dir, data, out, **run))
    assert metrics["resumed_from"] == "checkpoint-4" and adapter_diff(reference, out) <= 1e-6
    history = [(e["step"], e["loss"]) for e in metrics["loss_history"]]
    assert history == [
        (e["step"], e["loss"]) for e in json.loads((reference / "metrics.json").read_text())["loss_history"]
    ]


def test_the_length_figures_tell_length_from_preference():
    """A model that likes every chosen token better, but sums over more tokens where chosen is longer.

    Here each chosen token (3) is likelier than each rejected one (4), so per token chosen always
    wins; summed over the answer, chosen still loses every pair where it has more tokens.
    """
    import torch

    from tuneforge.evaluation.preference import length_note, score_pairs

    class Likes3(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.logits = torch.nn.Parameter(torch.tensor([0.0, 0, 0, 2, 1, 0, 0, 0, 0, 0]))

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": self.logits.expand(*input_ids.shape, 10)})()

    rows = [{"prompt_ids": [1, 2], "chosen_ids": [3] * chosen, "rejected_ids": [4] * rejected}
            for chosen, rejected in [(2, 5), (3, 4), (6, 2), (5, 5), (7, 1)]]  # fmt: skip
    figures = score_pairs(Likes3(), rows, batch_size=2)
    assert figures["accuracy"] == pytest.approx(3 / 5) and figures["accuracy_per_token"] == 1
    assert figures["pairs_chosen_longer"] == 2 and figures["accuracy_chosen_longer"] == 0
    assert "0.0% where the chosen answer is the longer (2 pairs)" in length_note(figures)
    figures = score_pairs(Likes3(), rows[:2], batch_size=2)
    assert figures["accuracy_chosen_longer"] is None and "no pair" in length_note(figures)
