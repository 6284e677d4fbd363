"""What the studio shows about a results folder, read from the files `tuneforge train` writes.

Nothing here is kept in memory between requests: a restarted studio sees exactly what the
folders say. The live curve comes from the run log's `step N/M  loss X ...` lines (written
and flushed at every logged step), because metrics.json appears only when a run finishes.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
STEP_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) step (?P<step>\d+)/(?P<max>\d+)\s+loss (?P<loss>[-+0-9.e]+|nan)"
    r"(?:.*?(?P<speed>[\d,]+) tok/s)?"
)
SHOWN_FIGURES = ("final_train_loss", "eval_loss_before", "eval_loss_after", "tokens_per_s", "train_time_s")
# A preference run's loss is DPO's, ORPO's or KTO's own, not comparable with an SFT loss: its headline is the
# held-out preference accuracy and margin (metrics.json "preference"), then the chosen answers' loss and speed.
PREFERENCE_FIGURES = ("accuracy", "margin")
PREFERENCE_SHOWN = ("eval_loss_before", "eval_loss_after", "tokens_per_s", "train_time_s")


def run_folders(runs_dir: Path) -> list[Path]:
    """Every results folder under the runs folder, newest first."""
    if not runs_dir.is_dir():
        return []
    found = [p for p in runs_dir.iterdir() if p.is_dir() and RUN_NAME.match(p.name) and _is_run(p)]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _is_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("tuneforge-run.json", "adapter_config.json")) or any(
        folder.glob("training_log_*.log")
    )


def folder_status(folder: Path) -> str:
    """finished, running (some process holds its lock) or stopped (unfinished, nobody writing)."""
    from tuneforge.runs.lock import holder_of
    from tuneforge.runs.resume import run_status

    if holder_of(folder) is not None:
        return "running"
    return "finished" if run_status(folder) == "finished" else "stopped"


def summary(folder: Path) -> dict[str, Any]:
    """One line of the runs table: what was trained on what, and its headline figures."""
    config = _config(folder)
    metrics = read_json(folder / "metrics.json") or {}
    points = loss_points(folder)
    return {
        "id": folder.name,
        "status": folder_status(folder),
        "model": config.get("model", {}).get("name"),
        "data": config.get("data", {}).get("dataset"),
        # metrics.json says what ran (raw text under the default method trains as pretrain); the marker what was asked
        "method": metrics.get("method") or config.get("train", {}).get("method"),
        "max_steps": config.get("train", {}).get("max_steps"),
        "step": points[-1]["step"] if points else 0,
        "figures": headline_figures(metrics),
        "updated": datetime.fromtimestamp(folder.stat().st_mtime).isoformat(timespec="seconds"),
    }


def headline_figures(metrics: dict[str, Any]) -> dict[str, float]:
    """The figures the runs table and the comparison show: SFT's losses, or a preference run's accuracy first."""
    number = lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)  # noqa: E731
    preference = metrics.get("preference")
    if not isinstance(preference, dict):
        return {key: metrics[key] for key in SHOWN_FIGURES if number(metrics.get(key))}
    sides = {when: preference.get(when) or {} for when in ("before", "after")}  # "after": None when not measured
    shown = {f"preference_{key}_{when}": figures[key] for key in PREFERENCE_FIGURES
             for when, figures in sides.items() if number(figures.get(key))}  # fmt: skip
    return shown | {key: metrics[key] for key in PREFERENCE_SHOWN if number(metrics.get(key))}


def detail(folder: Path, tail_lines: int = 40) -> dict[str, Any]:
    """The run view: the summary, every loss point, progress, checkpoints, the log tail and reports."""
    points = loss_points(folder)
    info = summary(folder)
    info.update(
        points=points,
        progress=progress(points, info["max_steps"]),
        checkpoints=checkpoints(folder),
        log_tail=log_tail(folder, tail_lines),
        eval=read_json(folder / "eval" / "metrics.json"),
        settings=_config(folder),
    )
    return info


def loss_points(folder: Path) -> list[dict[str, Any]]:
    """{step, loss, tokens_per_s, time} from every log of the run (a resumed run writes a new one); later wins."""
    by_step: dict[int, dict[str, Any]] = {}
    for log in sorted(folder.glob("training_log_*.log")):
        for line in _read_lines(log):
            match = STEP_LINE.match(line)
            if not match:
                continue
            step = int(match["step"])
            speed = float(match["speed"].replace(",", "")) if match["speed"] else None
            by_step[step] = {"step": step, "max_steps": int(match["max"]), "loss": float(match["loss"]),
                             "tokens_per_s": speed, "time": match["time"]}  # fmt: skip
    return [by_step[step] for step in sorted(by_step)]


def progress(points: list[dict[str, Any]], max_steps: int | None) -> dict[str, Any]:
    """Step, total, tokens/s and an ETA from the time the last logged steps took."""
    if not points:
        return {"step": 0, "max_steps": max_steps, "tokens_per_s": None, "eta_s": None}
    last = points[-1]
    total = last["max_steps"] or max_steps
    eta = None
    recent = [p for p in points if p["time"]][-5:]
    if len(recent) >= 2 and recent[-1]["step"] > recent[0]["step"]:
        start, end = (datetime.fromisoformat(p["time"]) for p in (recent[0], recent[-1]))
        per_step = (end - start).total_seconds() / (recent[-1]["step"] - recent[0]["step"])
        eta = round(per_step * max(total - last["step"], 0), 1)
    return {"step": last["step"], "max_steps": total, "tokens_per_s": last["tokens_per_s"], "eta_s": eta}


def checkpoints(folder: Path) -> list[str]:
    """Committed checkpoints only: the store writes into .staging-N and renames when whole."""
    store = folder / "checkpoints"
    if not store.is_dir():
        return []
    found = [p.name for p in store.iterdir() if p.is_dir() and p.name.startswith("checkpoint-")]
    return sorted(found, key=lambda name: int(name.split("-")[1]) if name.split("-")[1].isdigit() else -1)


def log_tail(folder: Path, lines: int) -> list[str]:
    logs = sorted(folder.glob("training_log_*.log"))
    return _read_lines(logs[-1])[-lines:] if logs else []


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _config(folder: Path) -> dict[str, Any]:
    marker = read_json(folder / "tuneforge-run.json") or {}
    config = marker.get("config") if isinstance(marker, dict) else None
    return config if isinstance(config, dict) else {}


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
