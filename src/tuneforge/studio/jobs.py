"""The job queue: `tuneforge train/eval/export` as child processes, one at a time, that outlive the studio.

Why child processes: one engine. The studio never trains itself, so a run started here resumes,
steps down after out-of-memory and refuses to overwrite a finished run exactly as on the CLI.
Why one at a time: a machine with one device trains one run at a time; the others wait in a
visible queue. Why a new session per child: Ctrl-C or a crash of the studio must not stop a run.

The queue lives in `<data>/jobs.json`, rewritten through a rename on every change. A studio
started again reads it and reattaches: a job whose process is still alive (same pid, same
start time, so a reused pid is not mistaken for it) stays running, and Stop still reaches it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from tuneforge.studio.settings import StudioSettings

ACTIVE = ("queued", "running")
STOP_CODES = (130, 143)  # Ctrl-C and SIGTERM: the run saved a checkpoint and stopped as asked


@dataclass
class Job:
    """One child command. `state` is queued, running, done or cancelled; `exit_code` None when unknown."""

    id: str
    kind: str  # train, eval or export
    run: str
    argv: list[str]
    state: str = "queued"
    pid: int | None = None
    pid_started: float | None = None
    exit_code: int | None = None
    stop_requested: bool = False
    created: float = field(default_factory=time.time)
    ended: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self, output: str) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("argv", "pid_started")}
        data["command"] = " ".join(["tuneforge", *self.argv])
        data["error"] = error_text(output) if self.state == "done" and self.failed(output) else None
        return data

    def failed(self, output: str) -> bool:
        if self.exit_code is None:  # reattached: the exit code went with the old studio; the output still tells
            return "Error:" in output or "Traceback" in output
        return self.exit_code != 0 and self.exit_code not in STOP_CODES


def error_text(output: str) -> str:
    """The one-paragraph error the command printed, or the output's end when it printed none."""
    if "Error:" in output:
        return output[output.rindex("Error:") :].strip()[:3000]
    return "\n".join(output.strip().splitlines()[-20:])[:3000] or "The command ended without any output."


class JobQueue:
    """Starts queued jobs one at a time and notices when they end. Thread-safe; `pump()` drives it."""

    def __init__(self, settings: StudioSettings) -> None:
        self.settings = settings
        self.path = settings.data_dir / "jobs.json"
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.jobs: list[Job] = self._load()

    # --- reading -------------------------------------------------------------------------------
    def output(self, job: Job) -> str:
        try:
            return (self.settings.jobs_dir / f"{job.id}.out").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def for_run(self, run: str, kind: str | None = None) -> list[Job]:
        with self._lock:
            return [j for j in self.jobs if j.run == run and (kind is None or j.kind == kind)]

    def active(self, run: str) -> Job | None:
        return next((j for j in self.for_run(run) if j.state in ACTIVE), None)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return next((j for j in self.jobs if j.id == job_id), None)

    def queue_position(self, job: Job) -> int:
        with self._lock:
            waiting = [j.id for j in self.jobs if j.state == "queued"]
        return waiting.index(job.id) + 1 if job.id in waiting else 0

    # --- changing ------------------------------------------------------------------------------
    def submit(self, kind: str, run: str, argv: list[str], extra: dict[str, Any] | None = None) -> Job:
        job = Job(id=uuid.uuid4().hex[:12], kind=kind, run=run, argv=argv, extra=extra or {})
        with self._lock:
            self.jobs.append(job)
            self._save()
        self.pump()
        return job

    def stop(self, job: Job) -> None:
        """A queued job is dropped; a running one gets SIGINT, the same as Ctrl-C: it finishes the step and saves."""
        with self._lock:
            if job.state == "queued":
                job.state, job.ended = "cancelled", time.time()
            elif job.state == "running" and job.pid:
                job.stop_requested = True
                try:
                    os.kill(job.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
            self._save()

    def pump(self) -> None:
        """Notice ended jobs, then start the next queued one if nothing runs."""
        with self._lock:
            changed = False
            for job in self.jobs:
                if job.state == "running" and not self._alive(job):
                    job.state, job.ended = "done", time.time()
                    changed = True
            if not any(j.state == "running" for j in self.jobs):
                waiting = next((j for j in self.jobs if j.state == "queued"), None)
                if waiting:
                    self._start(waiting)
                    changed = True
            if changed:
                self._save()

    def _start(self, job: Job) -> None:
        import psutil

        from tuneforge.config_resolve import ENV_VARS

        # the page's settings are what runs: a MAX_STEPS left in the studio's shell must not override them
        env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
        env.update(PYTHONUNBUFFERED="1", COLUMNS="160", TUNEFORGE_STUDIO_JOB=job.id)
        out = (self.settings.jobs_dir / f"{job.id}.out").open("wb")
        try:
            proc = subprocess.Popen(
                [*self.settings.tuneforge, *job.argv], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            out.write(f"Error: could not start `tuneforge {job.kind}`: {exc}\n".encode())
            job.state, job.exit_code, job.ended = "done", 2, time.time()
            return
        finally:
            out.close()
        self._procs[job.id] = proc
        job.state, job.pid = "running", proc.pid
        try:
            job.pid_started = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            job.pid_started = None

    def _alive(self, job: Job) -> bool:
        proc = self._procs.get(job.id)
        if proc is not None:
            code = proc.poll()
            if code is not None:
                job.exit_code = code
                del self._procs[job.id]
            return code is None
        return _still_running(job)  # reattached after a restart: not our child, so no exit code to read

    # --- the file ------------------------------------------------------------------------------
    def _load(self) -> list[Job]:
        try:
            rows = json.loads(self.path.read_text(encoding="utf-8"))
            return [Job(**row) for row in rows]
        except (OSError, ValueError, TypeError):
            return []

    def _save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps([asdict(j) for j in self.jobs], indent=1), encoding="utf-8")
        os.replace(temporary, self.path)


def _still_running(job: Job) -> bool:
    import psutil

    if not job.pid:
        return False
    try:
        process = psutil.Process(job.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return job.pid_started is None or abs(process.create_time() - job.pid_started) < 1.0
    except psutil.Error:
        return False


class Pump:
    """A daemon thread that calls `queue.pump()` every poll interval, for the life of the app."""

    def __init__(self, queue: JobQueue, interval: float) -> None:
        self.queue, self.interval = queue, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="studio-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.queue.pump()
