"""`--report-to`: TensorBoard event files under the run folder hold the logged losses; a missing tracker exits 2."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import tiny_train_values
from tuneforge.errors import UserError


def test_tensorboard_event_files_hold_the_logged_losses(tmp_path, tiny_model_dir, tiny_dataset):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tuneforge.commands.train import run_train
    from tuneforge.runs.folder import check_folder

    out = tmp_path / "results"
    values = tiny_train_values(tiny_model_dir, tiny_dataset, out, **{"train.max_steps": 4, "train.eval_examples": 0})
    metrics = run_train({**values, "train.report_to": "tensorboard"})
    assert metrics is not None
    events = list((out / "tracking" / "tensorboard").glob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in out.rglob("*"))
    reader = EventAccumulator(str(events[0].parent))
    reader.Reload()
    logged = {e.step: e.value for e in reader.Scalars("train/loss")}
    expected = {h["step"]: h["loss"] for h in metrics["loss_history"]}
    assert logged.keys() == expected.keys() and len(logged) >= 2
    assert all(abs(logged[s] - expected[s]) < 1e-4 for s in logged)
    check_folder(out)  # the tracking folder does not make the results look damaged
    assert "report_to: tensorboard" in (out / "tuneforge.yaml").read_text()


@pytest.mark.parametrize("tracker", ["trackio", "mlflow", "wandb"])
def test_a_tracker_that_is_not_installed_is_bad_input(tracker, monkeypatch):
    from tuneforge.recipe import tracking

    if importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed here")
    with pytest.raises(UserError, match=f"pip install {tracker}"):
        tracking.check_tracker(tracker)


def test_report_to_is_a_flag_with_its_choices():
    from typer.testing import CliRunner

    from tuneforge.cli import app

    result = CliRunner().invoke(app, ["train", "--report-to", "comet", "--dry-run"])
    assert result.exit_code == 2
    assert "train.report_to" in result.output and "tensorboard" in result.output
