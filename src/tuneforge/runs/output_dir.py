"""Make sure the results folder is ours to write, before any heavy work starts.

Results are never overwritten silently: a folder holding an earlier run is refused unless
--overwrite is given, and even then the old run is moved aside, not deleted. A folder holding
an unfinished run is resumed instead (resume.py decides how).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.runs.checkpoint_store import folder_bytes, remove_leftovers
from tuneforge.runs.resume import ResumeFlags, StartPlan, plan_resume, run_status, write_marker


def prepare_output_dir(
    path: Path,
    flags: ResumeFlags,
    config: dict[str, Any],
    world_size: int = 1,
    log: Callable[[str], None] = print,
    claim: bool = True,
) -> tuple[Path, StartPlan]:
    """Check the folder and decide how the run starts; `claim` marks it as this run's (rank 0 only).

    The `--nproc` parent checks without claiming: its children decide again, and a marker left by
    the parent would make a fresh run look like a crashed one.
    """
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"train.output_dir '{path}' is a file, not a folder. Choose another --output-dir.")
    status = run_status(path)
    if flags.overwrite and status != "empty":
        backup = path.with_name(f"{path.name}.old-{datetime.now():%Y%m%d_%H%M%S}")
        path.rename(backup)
        log(f"--overwrite: moved the earlier run from {path} to {backup}")
        status = "empty"
    if status in ("finished", "foreign"):
        raise occupied(path, status, flags)
    if status == "empty" and flags.resume:
        raise UserError(f"--resume was given, but '{path}' holds no run to resume. Run without --resume to start one.")
    plan = plan_resume(path, config, flags, world_size) if status == "unfinished" else StartPlan()
    plan.notes.append(_check_space(path, config))
    if claim:
        removed = remove_leftovers(path / "checkpoints")
        if removed:
            plan.notes.append(
                f"removed {len(removed)} unfinished checkpoint save(s) left by a crash: {', '.join(removed)}"
            )
        write_marker(path, "running", config)
    return path, plan


def start_plan_for_other_ranks(path: Path, flags: ResumeFlags, config: dict[str, Any], world_size: int) -> StartPlan:
    """Ranks other than 0 read the same folder to agree on the checkpoint, and never change it.

    With --overwrite, rank 0 is moving the old run aside meanwhile, so nothing there is read.
    """
    path = path.expanduser()
    if flags.overwrite or run_status(path) != "unfinished":
        return StartPlan()
    return plan_resume(path, config, flags, world_size)


def occupied(path: Path, status: str, flags: ResumeFlags) -> UserError:
    what = "a finished run" if status == "finished" else "files from another run"
    if flags.resume or flags.resume_anyway:
        return UserError(
            f"The results folder '{path}' holds {what}, so there is nothing to resume. Choose a new folder "
            "with --output-dir (or OUTPUT_DIR), or pass --overwrite to move the old run aside and start over."
        )
    return UserError(
        f"The results folder '{path}' already holds {what}. Choose a new folder "
        f"with --output-dir (or OUTPUT_DIR), or pass --overwrite to move the old run aside and start over."
    )


def _check_space(path: Path, config: dict[str, Any]) -> str:
    """Writable, and room for the kept checkpoints and the results; returns the log line with the figure used."""
    from tuneforge.disk_faults import mb
    from tuneforge.runs.space import estimate

    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".tuneforge-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"Can't write to the results folder '{path}' ({exc.strerror}). "
            "Choose a folder you own with --output-dir (or OUTPUT_DIR)."
        ) from None
    free, need = shutil.disk_usage(path).free, estimate(config)
    held = folder_bytes(path / "checkpoints")  # a resumed run's checkpoints already hold their share
    if free < need.total - held:
        raise UserError(
            f"Only {mb(free)} free where results go ({path}); this run needs {need.describe()}. Free some space, "
            "lower --save-total-limit, or pick another --output-dir."
        )
    return f"disk: {mb(free)} free in {path}; this run needs {need.describe()}"
