"""Resume: an interrupted run continues to exactly the same adapter, and a changed run is refused with a table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import adapter_diff, stop_training_at, tiny_train_values
from tuneforge.errors import Stopped, UserError

RUN = {"lora.dropout": 0.1, "train.save_steps": 4, "train.logging_steps": 1, "train.eval_examples": 0}


def values(model_dir, dataset, out, **overrides):
    return tiny_train_values(model_dir, dataset, out, **{**RUN, **overrides})


def stopped_run(monkeypatch, model_dir, dataset, out: Path, step: int, **overrides) -> Stopped:
    from tuneforge.commands.train import run_train

    with monkeypatch.context() as patch:
        stop_training_at(patch, step)
        with pytest.raises(Stopped) as stopped:
            run_train(values(model_dir, dataset, out, **overrides))
    return stopped.value


def history(out: Path) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in json.loads((out / "metrics.json").read_text())["loss_history"]]


def log_text(out: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(out.glob("training_log_*.log")))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, tiny_dataset) -> Path:
    """The same run, never interrupted."""
    from tuneforge.commands.train import run_train

    out = tmp_path_factory.mktemp("reference") / "results"
    run_train(values(tiny_model_dir, tiny_dataset, out))
    return out


@pytest.mark.parametrize("step", [1, 5, 11])
def test_an_interrupted_run_resumes_to_the_same_adapter(
    monkeypatch, tmp_path, tiny_model_dir, tiny_dataset, reference, step
):
    from tuneforge.commands.train import run_train

    out = tmp_path / "results"
    stopped = stopped_run(monkeypatch, tiny_model_dir, tiny_dataset, out, step)
    assert stopped.code == 130 and f"Stopped at step {step} of 12" in str(stopped)
    assert not (out / "adapter_model.safetensors").exists()
    metrics = run_train(values(tiny_model_dir, tiny_dataset, out))  # the same command, nothing cleaned by hand
    assert f"from checkpoint-{step} (step {step} of 12)" in log_text(out)
    assert metrics["resumed_from"] == f"checkpoint-{step}"
    assert adapter_diff(reference, out) <= 1e-6  # dropout on: the random state was restored too
    assert history(out) == history(reference)  # every step's loss, before and after the stop
    kept = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").iterdir())
    assert kept == sorted({8, 12, step})[-2:]  # save_total_limit 2: the newest two, the stop's own included


@pytest.fixture
def stopped_at_6(monkeypatch, tmp_path, tiny_model_dir, tiny_dataset) -> Path:
    out = tmp_path / "results"
    stopped_run(monkeypatch, tiny_model_dir, tiny_dataset, out, 6)
    return out


@pytest.mark.parametrize(
    ("key", "new", "shown"),
    [
        ("train.learning_rate", 1e-3, "train.learning_rate"),
        ("train.batch_size", 2, "batch (micro-batch × accumulation × processes)"),
        ("data.dataset", "copy", "data.dataset"),
        ("lora.r", 4, "lora.r"),
    ],
)
def test_changed_settings_are_refused_with_a_table(
    stopped_at_6, tiny_model_dir, tiny_dataset, tmp_path, key, new, shown
):
    from tuneforge.commands.train import run_train

    if new == "copy":
        new = str(shutil.copy(tiny_dataset, tmp_path / "other.jsonl"))
    with pytest.raises(UserError) as refused:
        run_train(values(tiny_model_dir, tiny_dataset, stopped_at_6, **{key: new}))
    message = str(refused.value)
    row = next(line for line in message.splitlines() if line.strip().startswith(shown))
    assert str(new).split("/")[-1] in row, row  # the new value, beside the old one
    assert "in the checkpoint" in message and "--overwrite" in message
    assert ("--resume-anyway" in message) != (key == "lora.r")  # a new LoRA shape can't load the checkpoint at all


def test_resume_anyway_continues_with_the_new_learning_rate(stopped_at_6, tiny_model_dir, tiny_dataset, reference):
    from tuneforge.commands.train import run_train
    from tuneforge.runs.resume import ResumeFlags

    run_train(values(tiny_model_dir, tiny_dataset, stopped_at_6, **{"train.learning_rate": 2.5e-3}),
              flags=ResumeFlags(resume=True, resume_anyway=True))  # fmt: skip
    old = {e["step"]: e["learning_rate"] for e in json.loads((reference / "metrics.json").read_text())["loss_history"]}
    new = {
        e["step"]: e["learning_rate"] for e in json.loads((stopped_at_6 / "metrics.json").read_text())["loss_history"]
    }
    assert new[5] == old[5]  # before the stop: the old rate
    assert new[10] == pytest.approx(old[10] / 2)  # after it: the new peak, on the same cosine schedule


def test_a_finished_run_is_never_resumed_or_overwritten(reference, tiny_model_dir, tiny_dataset, tmp_path):
    from tuneforge.commands.train import run_train
    from tuneforge.runs.resume import ResumeFlags

    with pytest.raises(UserError, match="already holds a finished run.*--output-dir.*--overwrite"):
        run_train(values(tiny_model_dir, tiny_dataset, reference))
    with pytest.raises(UserError, match="finished run, so there is nothing to resume"):
        run_train(values(tiny_model_dir, tiny_dataset, reference), flags=ResumeFlags(resume=True))
    with pytest.raises(UserError, match="holds no run to resume"):
        run_train(values(tiny_model_dir, tiny_dataset, tmp_path / "new"), flags=ResumeFlags(resume=True))


def test_a_run_that_died_before_its_first_checkpoint_starts_again(tmp_path, tiny_model_dir, tiny_dataset, reference):
    from tuneforge.commands.train import run_train
    from tuneforge.runs.resume import write_marker

    out = tmp_path / "results"
    out.mkdir()
    write_marker(out, "running", {})  # what a crash during model loading leaves behind
    (out / "training_log_20260101_000000.log").write_text("the crashed attempt's log\n")
    run_train(values(tiny_model_dir, tiny_dataset, out))
    assert "stopped before its first checkpoint; starting it again from step 0" in log_text(out)
    assert (out / "training_log_20260101_000000.log").read_text() == "the crashed attempt's log\n"  # kept
    assert adapter_diff(reference, out) <= 1e-6


def test_leftovers_of_a_crashed_save_are_removed_with_a_log_line(stopped_at_6, tiny_model_dir, tiny_dataset):
    from tuneforge.commands.train import run_train

    staging = stopped_at_6 / "checkpoints" / ".staging-7" / "checkpoint-7"
    staging.mkdir(parents=True)
    (staging / "adapter_model.safetensors").write_bytes(b"half written")
    run_train(values(tiny_model_dir, tiny_dataset, stopped_at_6))
    assert "removed 1 unfinished checkpoint save(s) left by a crash: .staging-7" in log_text(stopped_at_6)
    assert not any(p.name.startswith(".") for p in (stopped_at_6 / "checkpoints").iterdir())


def test_chat_on_an_unfinished_run_says_how_to_finish_it(stopped_at_6):
    from tuneforge.runs.folder import open_run

    with pytest.raises(UserError, match="has not finished, so it has no adapter yet.*again to resume"):
        open_run(stopped_at_6)


def test_folder_states_are_told_apart(tmp_path):
    from tuneforge.runs.resume import run_status, write_marker

    assert run_status(tmp_path / "missing") == "empty"
    older = tmp_path / "older"  # results from before run markers: an adapter, no marker
    older.mkdir()
    (older / "adapter_model.safetensors").write_bytes(b"weights")
    assert run_status(older) == "finished"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not ours")
    assert run_status(other) == "foreign"
    write_marker(other, "running", {})
    assert run_status(other) == "unfinished"
    write_marker(other, "finished", {})
    assert run_status(other) == "finished"
