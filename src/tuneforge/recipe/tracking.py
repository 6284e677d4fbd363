"""Experiment tracking (`train.report_to`): the Trainer's own integrations, kept offline and in the run folder.

transformers already logs to TensorBoard, Trackio, MLflow and Weights & Biases; what tuneforge
adds is where they write. Each tracker reads an environment variable for its folder, so they
are set here (only when the user has not set them) to `<output-dir>/tracking`, and nothing
needs a server or an account: a laptop run stays offline.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from tuneforge.errors import UserError

# report_to name → (the module it needs, the pip package that provides it)
NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "trackio": ("trackio", "trackio"),
         "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}  # fmt: skip
_SET_HERE: dict[str, str] = {}  # the values this module put into the environment


def check_tracker(report_to: str, out: Path) -> None:
    """Before the model loads: a tracker that is not installed is bad input, not a crash at step 1.

    It also points the tracker at `<out>/tracking` now, not when the Trainer is built: Trackio reads
    TRACKIO_DIR once, when it is imported, and TRL imports it with its trainers (trl/extras/profiling.py).
    Set later, Trackio's database went to ~/.cache/huggingface/trackio (seen in tests/test_tracking.py).
    """
    if report_to == "none":
        return
    module, package = NEEDS[report_to]
    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"train.report_to is '{report_to}', but the {package} package is not installed. "
            f"Install it with `pip install {package}`, or choose another tracker with --report-to (none turns it off).",
            field="train.report_to",
        )
    report_targets(report_to, out)


def report_targets(report_to: str, out: Path) -> list[str]:
    """The Trainer's `report_to` list, with each tracker pointed at a local folder of the run."""
    if report_to == "none":
        return []
    folder = (out / "tracking").resolve()
    defaults = {
        "tensorboard": {"TENSORBOARD_LOGGING_DIR": str(folder / "tensorboard")},
        # MLflow 3 refuses its file store unless asked: it is in maintenance mode, but needs no database
        # and keeps artifacts in the same folder (a sqlite:// store took 8 s to create per run)
        "mlflow": {"MLFLOW_TRACKING_URI": (folder / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"},
        "trackio": {"TRACKIO_DIR": str(folder / "trackio")},
        # offline: no account, no network; `wandb sync` uploads the folder later if wanted
        "wandb": {"WANDB_MODE": "offline", "WANDB_DIR": str(folder)},
    }[report_to]
    for name, value in defaults.items():
        # a user's own setting wins; one set by an earlier run in this process is replaced
        if os.environ.get(name) in (None, _SET_HERE.get(name)):
            os.environ[name] = _SET_HERE[name] = value
    return [report_to]


def where_it_logs(report_to: str, out: Path) -> str | None:
    """The log line that tells the user how to open what was tracked."""
    folder = out / "tracking"
    return {
        "none": None,
        "tensorboard": f"tracking: TensorBoard event files in {folder}/tensorboard (tensorboard --logdir {folder}/tensorboard)",
        "mlflow": f"tracking: MLflow file store in {folder}/mlruns (MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {folder / 'mlruns'})",
        "trackio": f"tracking: Trackio in {folder}/trackio (TRACKIO_DIR={folder}/trackio trackio show)",
        "wandb": f"tracking: Weights & Biases offline run in {folder}/wandb (wandb sync {folder}/wandb/offline-run-*)",
    }[report_to]
