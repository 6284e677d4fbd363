"""`--report-to`: TensorBoard's event files and MLflow's file store in the run folder hold the logged losses; a missing tracker exits 2."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_train_values
from tuneforge.errors import UserError


def logged_losses(tracker: str, folder: Path) -> dict[int, float]:
    """The training losses as the tracker stored them, read back with its own reader."""
    if tracker == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = list((folder / "tensorboard").glob("events.out.tfevents.*"))
        assert events, sorted(p.name for p in folder.rglob("*"))
        reader = EventAccumulator(str(events[0].parent))
        reader.Reload()
        return {e.step: e.value for e in reader.Scalars("train/loss")}
    if tracker == "wandb":
        import wandb

        wandb.finish()  # the CLI's exit closes the run; in a test process it stays open, its file unflushed
        (log,) = (folder / "wandb").glob("offline-run-*/run-*.wandb")
        # finish() can return before wandb's writer process has written the rest (seen once under a loaded
        # CI machine: no history at all): read once the run's exit record, the last thing it writes, is there
        deadline = time.monotonic() + 60
        while not (read := wandb_history(log))[1] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert read[1], f"{log} has no exit record after 60 s"
        return read[0]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(folder / "mlruns").as_uri())  # the file store, no server
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow", "wandb"])
def test_a_tracker_holds_the_logged_losses_in_the_run_folder(tracker, tmp_path, tiny_model_dir, tiny_dataset):
    from tuneforge.commands.train import run_train
    from tuneforge.runs.folder import check_folder

    pytest.importorskip(tracker, reason=f"pip install {tracker} (the test extras install it)")
    out = tmp_path / "results"
    values = tiny_train_values(tiny_model_dir, tiny_dataset, out, **{"train.max_steps": 4, "train.eval_examples": 0})
    metrics = run_train({**values, "train.report_to": tracker})
    assert metrics is not None
    logged = logged_losses(tracker, (out / "tracking").resolve())
    expected = {h["step"]: h["loss"] for h in metrics["loss_history"]}
    assert logged.keys() == expected.keys() and len(logged) >= 2
    assert all(abs(logged[s] - expected[s]) < 1e-4 for s in logged)
    check_folder(out)  # the tracking folder does not make the results look damaged
    assert f"report_to: {tracker}" in (out / "tuneforge.yaml").read_text()


def wandb_history(path: Path) -> tuple[dict[int, float], bool]:
    """The losses in an offline W&B run file (`run-<id>.wandb`), as `wandb sync` would upload them, and
    whether the run's exit record is there yet.

    Written by hand because wandb 0.31 ships no Python reader any more (its Go core reads the file):
    a 7-byte header (":W&B", magic, version), then LevelDB-log blocks of 32 KiB whose records
    (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last) hold wandb's own protobuf `Record`s.
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    pos, pending, losses, exited = 7, b"", {}, False
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending, pos = pending + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            exited = exited or record.WhichOneof("record_type") == "exit"
            if record.WhichOneof("record_type") == "history":
                row = {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
                }
                if "train/loss" in row:  # transformers logs the Trainer's step as train/global_step
                    losses[row["train/global_step"]] = row["train/loss"]
    return losses, exited


# Trackio's own reader, in a fresh process: Trackio reads TRACKIO_DIR once, when it is imported
READ_TRACKIO = """
from trackio.sqlite_storage import SQLiteStorage
import json
(project,) = SQLiteStorage.get_projects()
(run,) = SQLiteStorage.get_runs(project)
logs = SQLiteStorage.get_logs(project, run)  # transformers logs its own counter as step, the Trainer's as below
print(json.dumps({e["train/global_step"]: e["train/loss"] for e in logs if "train/loss" in e}))
"""


def test_trackio_holds_the_logged_losses_in_the_run_folder(tmp_path, tiny_model_dir, tiny_dataset):
    """Through the CLI, as users run it: TRL imports Trackio early, so the folder must be set before it loads."""
    from tests.test_ddp import _as_yaml
    from tuneforge.runs.folder import check_folder

    pytest.importorskip("trackio", reason="pip install trackio (the test extras install it)")
    out = tmp_path / "results"
    values = tiny_train_values(tiny_model_dir, tiny_dataset, out, **{"train.max_steps": 4, "train.eval_examples": 0})
    config = _as_yaml(values, tmp_path / "run.yaml")
    env = {k: v for k, v in os.environ.items() if k != "TRACKIO_DIR"} | {"CUDA_VISIBLE_DEVICES": ""}
    tuneforge = Path(sys.executable).with_name("tuneforge")
    done = subprocess.run([str(tuneforge), "train", "--config", str(config), "--report-to", "trackio"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = (out / "tracking" / "trackio").resolve()
    assert any(folder.glob("*.db")), sorted(p.name for p in tmp_path.rglob("*"))
    read = subprocess.run([sys.executable, "-c", READ_TRACKIO], env=env | {"TRACKIO_DIR": str(folder)},
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    logged = {int(step): loss for step, loss in json.loads(read.stdout.strip().splitlines()[-1]).items()}
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {h["step"]: h["loss"] for h in metrics["loss_history"]}
    assert logged.keys() == expected.keys() and len(logged) >= 2
    assert all(abs(logged[s] - expected[s]) < 1e-4 for s in logged)
    check_folder(out)
    (log,) = out.glob("training_log_*.log")  # the log says where to look, and how to open it
    assert f"tracking: Trackio in {out / 'tracking'}/trackio" in log.read_text()


@pytest.mark.parametrize("tracker", ["trackio", "mlflow", "wandb"])
def test_a_tracker_that_is_not_installed_is_bad_input(tracker, monkeypatch):
    from tuneforge.recipe import tracking

    real = importlib.util.find_spec  # the test extras install every tracker: hide this one, as on a user's machine
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == tracker else real(name, *a))
    with pytest.raises(UserError, match=f"pip install {tracker}"):
        tracking.check_tracker(tracker, Path("results"))


def test_report_to_is_a_flag_with_its_choices():
    from typer.testing import CliRunner

    from tuneforge.cli import app

    result = CliRunner().invoke(app, ["train", "--report-to", "comet", "--dry-run"])
    assert result.exit_code == 2
    assert "train.report_to" in result.output and "tensorboard" in result.output
