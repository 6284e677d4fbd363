"""A run's status as the page shows it: what its folder says, joined with the studio's job for it.

running/finished/stopped come from the folder (runs/lock.py says whether a process writes it);
queued and failed come from the job: a train that ended with an error leaves an unfinished
folder (or none at all, when the settings were refused), and the page shows the error it printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.studio import discovery
from tuneforge.studio.jobs import Job, JobQueue


def run_state(run: str, folder: Path, queue: JobQueue) -> tuple[str, str | None]:
    """(status, error): status is queued, running, finished, stopped or failed."""
    train_jobs = queue.for_run(run, "train")
    last = train_jobs[-1] if train_jobs else None
    if last is not None and last.state in ("queued", "running"):
        return last.state, None
    status = discovery.folder_status(folder) if folder.is_dir() else "stopped"
    if status == "stopped" and last is not None and last.state == "done":
        output = queue.output(last)
        if last.failed(output):
            return "failed", last.public(output)["error"]
    return status, None


def known_runs(runs_dir: Path, queue: JobQueue) -> list[str]:
    """Every results folder, and runs the studio started whose folder does not exist (yet, or ever)."""
    names = [folder.name for folder in discovery.run_folders(runs_dir)]
    with queue._lock:
        started = [job.run for job in reversed(queue.jobs) if job.kind == "train"]
    return names + [name for name in dict.fromkeys(started) if name not in names]


def list_runs(runs_dir: Path, queue: JobQueue) -> list[dict[str, Any]]:
    return [describe(runs_dir, queue, name, full=False) for name in known_runs(runs_dir, queue)]


def describe(runs_dir: Path, queue: JobQueue, run: str, full: bool = True) -> dict[str, Any]:
    folder = runs_dir / run
    if folder.is_dir():
        info = discovery.detail(folder) if full else discovery.summary(folder)
    else:
        info = {"id": run, "model": None, "data": None, "method": None, "step": 0, "figures": {}, "max_steps": None}
        if full:
            info.update(points=[], progress=discovery.progress([], None), checkpoints=[], log_tail=[], eval=None)
    info["status"], info["error"] = run_state(run, folder, queue)
    job = queue.active(run)
    info["job"] = _job_view(queue, job) if job else None
    if full:
        info["jobs"] = [_job_view(queue, j) for j in queue.for_run(run)][-10:]
    return info


def _job_view(queue: JobQueue, job: Job) -> dict[str, Any]:
    view = job.public(queue.output(job))
    view["queue_position"] = queue.queue_position(job)
    return view
