"""Ctrl-C and SIGTERM: the real process finishes its step, saves a checkpoint, says how to resume, exits 130/143."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuneforge.recipe import interrupts
from tuneforge.runs import checkpoint_store


def train_command(model_dir: Path, dataset: Path, out: Path, steps: int) -> list[str]:
    return [
        sys.executable, "-m", "tuneforge", "train", "--model", str(model_dir), "--dataset", str(dataset),
        "--output-dir", str(out), "--max-steps", str(steps), "--batch-size", "2", "--learning-rate", "5e-3",
        "--max-seq-length", "128", "--lora-r", "8", "--precision", "fp32", "--no-eval",
    ]  # fmt: skip


def wait_for_step(process: subprocess.Popen, log: Path, step: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if f"step {step}/" in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"training never reached step {step}:\n{log.read_text(errors='replace')[-2000:]}")


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_a_checkpoint_and_exits_with_the_shells_code(
    tmp_path, tiny_model_dir, tiny_dataset, signum, code
):
    out, log = tmp_path / "results", tmp_path / "train.out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    with log.open("w") as handle:  # logging_steps is 5: the first logged step is 1, then 5, 10, ...
        process = subprocess.Popen(
            train_command(tiny_model_dir, tiny_dataset, out, 2000), stdout=handle, stderr=subprocess.STDOUT, env=env
        )
        wait_for_step(process, log, 5)
        process.send_signal(signum)
        assert process.wait(timeout=60) == code
    text = log.read_text()
    assert "stopping after this step and saving a checkpoint" in text
    assert "Run the same command again to resume" in text and "Traceback" not in text
    usable = checkpoint_store.newest_usable(out / "checkpoints")
    assert usable.folder is not None and not usable.skipped
    step = usable.manifest["step"]
    assert 5 <= step < 2000 and f"Stopped at step {step} of 2000" in text
    assert json.loads((out / "tuneforge-run.json").read_text())["status"] == "running"
    assert not (out / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_the_stopped_run_resumes_with_the_same_command(tmp_path, tiny_model_dir, tiny_dataset):
    out, log = tmp_path / "results", tmp_path / "train.out"
    command = train_command(tiny_model_dir, tiny_dataset, out, 40)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        wait_for_step(process, log, 5)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
    step = checkpoint_store.newest_usable(out / "checkpoints").manifest["step"]
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"from checkpoint-{step} (step {step} of 40)" in again.stdout
    assert json.loads((out / "metrics.json").read_text())["steps"] == 40


class FakeLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, show: bool = True) -> None:
        self.lines.append(message)


def test_a_second_ctrl_c_quits_at_once_but_an_echo_does_not(monkeypatch, capfd):
    exits: list[int] = []
    clock = [100.0]
    monkeypatch.setattr(interrupts.os, "_exit", exits.append)
    monkeypatch.setattr(interrupts.time, "monotonic", lambda: clock[0])
    stop = interrupts.StopOnSignal(FakeLog())
    stop._handle(signal.SIGINT, None)
    assert stop.code == 130 and exits == [] and "Press Ctrl-C again" in capfd.readouterr().err
    clock[0] += 0.5  # torchrun passing the same press on
    stop._handle(signal.SIGINT, None)
    assert exits == []
    clock[0] += 3  # the user pressing again
    stop._handle(signal.SIGINT, None)
    assert exits == [130]


def test_handlers_are_restored_after_training():
    before = signal.getsignal(signal.SIGINT)
    with interrupts.StopOnSignal(FakeLog()):
        assert signal.getsignal(signal.SIGINT) != before
    assert signal.getsignal(signal.SIGINT) == before


def test_a_signal_during_a_log_write_writes_nothing_to_the_log(capfd):
    """The handler can land inside the log file's write or flush; writing the file again from there raised
    'reentrant call' and killed the run (a studio's Stop, mid-log-line). It goes to stderr; the log waits."""
    from types import SimpleNamespace

    stop = interrupts.StopOnSignal(FakeLog())
    lines = stop.log.lines
    stop._handle(signal.SIGINT, None)
    assert lines == [] and "Ctrl-C: stopping after this step" in capfd.readouterr().err
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    stop.on_step_end(None, None, control)
    assert control.should_save and control.should_training_stop and stop.code == 130
    assert len(lines) == 1 and lines[0].startswith("Ctrl-C: stopping after this step")
    stop.on_step_end(None, None, control)
    assert len(lines) == 1, "logged once"
