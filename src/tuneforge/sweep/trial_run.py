"""One trial: a real `tuneforge train` child process in its own folder, watched for the pruner.

The child is the same command a user runs, so each trial has train's guarantees (checkpoints,
resume, the results manifest). It writes its mid-run held-out losses to `heldout_curve.jsonl`;
this side reads them, reports them to Optuna, and stops the child when the pruner says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuneforge.config_resolve import ENV_VARS

HELDOUT_CURVE = "heldout_curve.jsonl"  # written by recipe/progress.py in the child's results folder
POLL_S = 0.5


class TrialFailed(Exception):
    """The child exited with an error: the trial is recorded as failed, the sweep goes on."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TrialPlan:
    """Everything a trial needs besides its drawn values."""

    base: dict[str, dict[str, Any]]  # model/data/lora/train sections of the sweep's resolved config
    trials_dir: Path
    trial_steps: int
    eval_every: int
    objective: str  # "loss" or "rouge"


def trial_sections(plan: TrialPlan, values: dict[str, Any], folder: Path) -> dict[str, dict[str, Any]]:
    """The trial's config: the base, the drawn values, and the short run that reports to the pruner."""
    sections = {name: dict(section) for name, section in plan.base.items()}
    for key, value in values.items():
        section, name = key.split(".")
        sections[section][name] = value
    steps = plan.trial_steps
    sections["train"].update(
        output_dir=str(folder.absolute()), max_steps=steps, eval_steps=min(plan.eval_every, steps),
        save_steps=min(plan.eval_every, steps),  # a killed trial resumes from its last report
        quick_eval=plan.objective == "rouge",  # generation costs time; only the rouge objective needs it
    )  # fmt: skip
    return sections


def write_yaml(path: Path, sections: dict[str, dict[str, Any]], header: str) -> None:
    text = yaml.safe_dump(sections, sort_keys=False, default_flow_style=False, allow_unicode=True)
    path.write_text(f"# {header}\n{text}", encoding="utf-8")


def child_environment() -> dict[str, str]:
    """The guide's variables are already part of the sweep's config; in the child they would override the YAML."""
    return {k: v for k, v in os.environ.items() if k not in ENV_VARS}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the sweep dies, so it saves a checkpoint instead of running on alone."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def wait_until_free(folder: Path, timeout_s: float = 180.0) -> None:
    """A retried trial's folder may still be held by the child of a killed sweep, saving its checkpoint."""
    from tuneforge.errors import UserError
    from tuneforge.runs.lock import acquire

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            acquire(folder, "trial folder").release()
            return
        except UserError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def start_child(config: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tuneforge", "train", "--config", str(config)]
    handle = log.open("ab")
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(  # noqa: S603  (our own CLI, no shell)
        command, stdout=handle, stderr=subprocess.STDOUT, env=child_environment(), preexec_fn=preexec
    )


def read_curve(folder: Path) -> list[tuple[int, float]]:
    """(step, held-out loss) pairs written so far; a line still being written is skipped."""
    path = folder / HELDOUT_CURVE
    if not path.is_file():
        return []
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            points.append((int(entry["step"]), float(entry["eval_loss"])))
        except (ValueError, KeyError):
            continue
    return points


def stop_child(proc: subprocess.Popen[bytes], grace_s: float = 60.0) -> None:
    """SIGTERM: train finishes the step and saves; a child that hangs is killed."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def objective_value(folder: Path, objective: str) -> float:
    """The trial's figure from its metrics.json: held-out loss, or ROUGE-L of the quick check."""
    metrics: dict[str, Any] = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    if objective == "rouge":
        quick = metrics.get("quick_eval") or {}
        if "tuned" not in quick:
            raise TrialFailed("the trial produced no ROUGE figure (no held-out questions were answered)", 1)
        return float(quick["tuned"]["rougeL"])
    if metrics.get("eval_loss_after") is None:
        raise TrialFailed("the trial produced no held-out loss (no held-out examples?)", 1)
    return float(metrics["eval_loss_after"])


def log_tail(log: Path, lines: int = 6) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def wait_and_watch(proc: subprocess.Popen[bytes], folder: Path, on_point: Any) -> None:
    """Report each new held-out point; `on_point(step, loss)` returns True to stop the child (pruned)."""
    seen: set[int] = set()
    while True:
        finished = proc.poll() is not None
        for step, loss in read_curve(folder):
            if step in seen:
                continue
            seen.add(step)
            if on_point(step, loss) and not finished:  # a finished trial's points are plotted, never pruned
                stop_child(proc)
                raise Pruned(step)
        if finished:
            return
        time.sleep(POLL_S)


class Pruned(Exception):
    def __init__(self, step: int) -> None:
        super().__init__(f"pruned at step {step}")
        self.step = step
