"""`tuneforge sweep`: real trials with one pruned, the outputs, best.yaml into train, resume, workers, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import assert_plain_exit_2

# lr 1e-8 learns nothing, so with seed 42 the fourth trial (1e-8 again) is worse than the median
# of the first three at step 2 and is pruned; the first two are the pruner's start-up trials.
SPACE = "sweep:\n  space:\n    train.learning_rate: {choices: [0.00000001, 0.02]}\n    lora.r: {choices: [4, 8]}\n"


def sweep_args(model: Path, data: Path, out: Path, space: Path, *extra: str) -> list[str]:
    return ["sweep", "--config", str(space), "--output-dir", str(out), "--trial-steps", "4", "--eval-every", "2",
            "--model", str(model), "--dataset", str(data), "--max-seq-length", "128", "--precision", "fp32",
            "--eval-examples", "8", "--batch-size", "4", *extra]  # fmt: skip


def run_cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.run([sys.executable, "-m", "tuneforge", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.fixture()
def space(tmp_path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE, encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_four_trial_sweep_prunes_one_and_leaves_a_best_yaml_that_train_uses(
    tmp_path, tiny_model_dir, tiny_dataset, space
):
    from tuneforge.cli import app
    from tuneforge.runs.folder import check_folder

    out = tmp_path / "sweep"
    result = run_cli(sweep_args(tiny_model_dir, tiny_dataset, out, space, "--trials", "4"), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    with (out / "trials.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["state"] for r in rows] == ["complete", "complete", "complete", "pruned"]
    assert rows[3]["last_step"] == "2" and rows[3]["train.learning_rate"] == "1e-08"
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["complete"], summary["pruned"], summary["failed"]) == (3, 1, 0)
    assert summary["best_params"]["train.learning_rate"] == 0.02 and summary["pruning_saved_s"] > 0
    assert "1 pruned" in result.stdout
    for name in ("optimization_history", "param_importances", "loss_curves"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert f'id="{name}"' in (out / "summary.html").read_text()
    check_folder(out / "best")  # the best trial's adapter, whole, ready for chat/eval/serve/export
    # a trial's last mid-run held-out loss is its final figure: measured once, not again after training
    trial = out / "trials" / "trial-0"
    curve = [json.loads(line) for line in (trial / "heldout_curve.jsonl").read_text().splitlines()]
    assert [point["step"] for point in curve] == [2, 4]
    assert json.loads((trial / "metrics.json").read_text())["eval_loss_after"] == curve[-1]["eval_loss"]
    assert "held-out loss, tuned model: " in (log := next(trial.glob("training_log_*.log")).read_text())
    assert "(measured at step 4)" in log and log.count("held-out loss, tuned model") == 1
    # best.yaml is a train config as is: the best values, at train's full length
    dry = CliRunner().invoke(app, ["train", "--config", str(out / "best.yaml"), "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    config = json.loads(dry.output[dry.output.index("{") :])["config"]
    assert config["train"]["learning_rate"] == 0.02 and config["lora"]["r"] == summary["best_params"]["lora.r"]
    assert config["train"]["max_steps"] == 150 and config["train"]["eval_steps"] == 0
    # the same command again: the finished sweep is kept, and says so
    again = run_cli(sweep_args(tiny_model_dir, tiny_dataset, out, space, "--trials", "4"), tmp_path)
    assert_plain_exit_2(again, "already finished 4 trials", "Nothing was overwritten")


def test_bad_search_spaces_storage_and_workers_exit_2_naming_them(tmp_path, tiny_model_dir, tiny_dataset):
    from tuneforge.cli import app

    runner = CliRunner()
    base = [
        "sweep",
        "--output-dir",
        str(tmp_path / "s"),
        "--model",
        str(tiny_model_dir),
        "--dataset",
        str(tiny_dataset),
    ]
    cases = {
        "sweep:\n  space:\n    train.learnig_rate: {low: 0.001, high: 0.01}\n": ["train.learnig_rate", "did you mean 'train.learning_rate'"],
        "sweep:\n  space:\n    train.learning_rate: {low: 0.01, high: 0.001}\n": ["range is empty", "swap them"],
        "sweep:\n  space:\n    lora.r: {choices: []}\n": ["choices is empty"],
        "sweep:\n  space:\n    lora.dropout: {low: 0.0, high: 1.5}\n": ["lora.dropout", "1.5"],
    }  # fmt: skip
    for text, needles in cases.items():
        path = tmp_path / "bad.yaml"
        path.write_text(text, encoding="utf-8")
        result = runner.invoke(app, [*base, "--config", str(path)])
        assert result.exit_code == 2, (text, result.output)
        message = " ".join(result.output.split())
        assert all(n in message for n in needles), (needles, message)
    url = "postgresql://tuner:s3cret-pw@127.0.0.1:9/nowhere"
    result = runner.invoke(app, [*base, "--storage", url])
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and "postgresql://tuner:***@127.0.0.1:9/nowhere" in message, message
    assert "s3cret" not in result.output
    # a driver that is not installed is named with its package before any connection (pg8000: never installed)
    result = runner.invoke(app, [*base, "--storage", url.replace("postgresql:", "postgresql+pg8000:")])
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and "driver 'pg8000', which is not installed" in message, message
    assert "pip install pg8000" in message and "tuner:***@" in message and "s3cret" not in message
    result = runner.invoke(app, [*base, "--workers", "500", "--model", "smollm2-135m"])
    assert result.exit_code == 2 and "--workers 500 needs about" in " ".join(result.output.split()), result.output
    result = runner.invoke(app, [*base, "--no-such-flag", "1"])
    assert result.exit_code == 2 and "no-such-flag" in result.output


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_same_number_of_trials(tmp_path, tiny_model_dir, tiny_dataset, space):
    import signal
    import time

    from tuneforge.runs.checkpoint_store import committed

    out = tmp_path / "sweep"
    args = sweep_args(tiny_model_dir, tiny_dataset, out, space, "--trials", "3", "--pruner", "none")
    args[args.index("--trial-steps") + 1] = "10"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    log = tmp_path / "first-sweep.log"
    with log.open("w", encoding="utf-8") as sink:
        first = subprocess.Popen([sys.executable, "-m", "tuneforge", *args], cwd=tmp_path, env=env,
                                 stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
    trial = out / "trials" / "trial-1"
    deadline = time.monotonic() + 240
    # any committed checkpoint of trial 1, not one step's: a tiny model's steps take a few ms, and on a
    # loaded machine a poll can miss the moment one given checkpoint exists (it is rotated two saves later)
    while not committed(trial / "checkpoints") and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # the sweep dies at once; its trial child gets SIGTERM and saves
    first.wait()
    tail = log.read_text(encoding="utf-8")[-2000:]
    assert committed(trial / "checkpoints"), f"trial 1 never saved a checkpoint; the sweep's output:\n{tail}"
    assert not (trial / "metrics.json").exists(), f"trial 1 ran to its end before it was killed:\n{tail}"
    result = run_cli(args, tmp_path)  # the same command again
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trials 1 were cut off" in result.stdout
    with (out / "trials.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["state"] for r in rows].count("complete") == 3
    assert [(r["state"], r["folder"]) for r in rows if r["folder"] == "trial-1"] == [
        ("fail", "trial-1"),
        ("complete", "trial-1"),
    ]
    resumed = json.loads((out / "trials" / "trial-1" / "metrics.json").read_text())
    assert resumed["resumed_from"] is not None and resumed["steps"] == 10  # from its checkpoint, not from zero


@pytest.mark.slow
def test_the_rouge_objective_keeps_the_trial_with_the_highest_quick_check_score(tmp_path, tiny_model_dir, tiny_dataset):
    out = tmp_path / "sweep"
    space = tmp_path / "space.yaml"
    space.write_text("sweep:\n  space:\n    train.learning_rate: {choices: [0.02]}\n", encoding="utf-8")
    args = sweep_args(tiny_model_dir, tiny_dataset, out, space, "--trials", "1", "--objective", "rouge")
    args[args.index("--eval-examples") + 1] = "4"
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["objective"], summary["direction"], summary["complete"]) == ("rouge", "maximize", 1)
    quick = json.loads((out / "trials" / "trial-0" / "metrics.json").read_text())["quick_eval"]
    assert quick["examples"] == 4 and summary["best_value"] == quick["tuned"]["rougeL"]
    assert "objective rouge (maximize)" in result.stdout and "rouge " in (out / "best.yaml").read_text()
