"""Make sure the results folder is ours to write, before any heavy work starts.

Results are never overwritten silently: a folder holding an earlier run is refused unless
--overwrite is given, and even then the old run is moved aside, not deleted.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from tuneforge.errors import UserError

MIN_FREE_BYTES = 200 * 1024**2  # adapter, checkpoints and logs of a small run


def prepare_output_dir(path: Path, overwrite: bool, log=print) -> Path:
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"train.output_dir '{path}' is a file, not a folder. Choose another --output-dir.")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise UserError(
                f"The results folder '{path}' already holds files from another run. Choose a new folder "
                f"with --output-dir (or OUTPUT_DIR), or pass --overwrite to move the old run aside and start over."
            )
        backup = path.with_name(f"{path.name}.old-{datetime.now():%Y%m%d_%H%M%S}")
        path.rename(backup)
        log(f"--overwrite: moved the earlier run from {path} to {backup}")
    _check_writable(path)
    return path


def _check_writable(path: Path) -> None:
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
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        raise UserError(
            f"Only {free / 1e6:.0f} MB free where results go ({path}); at least "
            f"{MIN_FREE_BYTES / 1e6:.0f} MB are needed. Free some space or pick another --output-dir."
        )
