"""Checkpoints on disk: staged, fsynced and renamed into place, so a crash never leaves a half one.

transformers writes a checkpoint straight into `checkpoint-N`; a job killed mid-save leaves a
folder without `trainer_state.json` that auto-resume then trips over (transformers #35782,
axolotl #1631). Here the Trainer writes into `.staging-N/`, a manifest listing every file with
its size and SHA-256 is written last, and one `rename` commits the folder. On resume a
checkpoint counts only if its manifest matches what is on disk, so a torn one is named and
skipped, never loaded. This is plain file handling with no torch in it; the Trainer side is in
`checkpointing.py`.
"""

from __future__ import annotations

import json
import re
import shutil
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tuneforge.disk_faults import writing
from tuneforge.errors import UserError
from tuneforge.runs.manifest import check_file, describe, fsync_dir, fsync_tree

MANIFEST = "tuneforge-checkpoint.json"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"  # old checkpoints are renamed here before deletion, so a crash mid-delete is harmless
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class Usable:
    """The checkpoint to resume from (None: start from step 0), and why newer ones were passed over."""

    folder: Path | None
    manifest: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def staging_root(checkpoints: Path, step: int) -> Path:
    return checkpoints / f"{STAGING_PREFIX}{step}"


def remove_leftovers(checkpoints: Path) -> list[str]:
    """Staging and trash folders are what a crash left behind; nothing in them was ever committed."""
    removed: list[str] = []
    if not checkpoints.is_dir():
        return removed
    for path in sorted(checkpoints.iterdir()):
        if path.name.startswith((STAGING_PREFIX, TRASH_PREFIX)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def commit(staged: Path, checkpoints: Path, step: int, extra: dict[str, Any]) -> Path:
    """Manifest last, fsync everything, then one rename: the checkpoint exists whole or not at all."""
    files = {str(p.relative_to(staged)): describe(p) for p in sorted(staged.rglob("*")) if p.is_file()}
    manifest = {"format": 1, "step": step, "saved_at": datetime.now(timezone.utc).isoformat(), **extra, "files": files}
    (staged / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    fsync_tree(staged)
    target = checkpoints / f"checkpoint-{step}"
    if target.exists():  # a torn leftover of an earlier attempt at this step: keep it aside, named
        aside = checkpoints / f"checkpoint-{step}.torn"
        shutil.rmtree(aside, ignore_errors=True)
        target.rename(aside)
    staged.rename(target)
    fsync_dir(checkpoints)
    return target


def rotate(checkpoints: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` committed checkpoints; called only after a commit."""
    folders = committed(checkpoints)
    removed = []
    for folder in folders[keep:]:
        trash = checkpoints / f"{TRASH_PREFIX}{folder.name}"
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(folder.name)
    return removed


def committed(checkpoints: Path) -> list[Path]:
    """`checkpoint-N` folders, newest first (by step, not by mtime)."""
    if not checkpoints.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoints.iterdir() if p.is_dir() and (m := CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def newest_usable(checkpoints: Path) -> Usable:
    """The newest checkpoint whose files match its manifest; torn ones are listed with the file at fault."""
    skipped: list[str] = []
    for folder in committed(checkpoints):
        manifest, problem = verify(folder)
        if problem is None:
            return Usable(folder, manifest, skipped)
        skipped.append(f"{folder.name}: {problem}")
    return Usable(None, {}, skipped)


def verify(folder: Path) -> tuple[dict[str, Any], str | None]:
    """(manifest, None) when every listed file is there with its size and checksum, else the first problem.

    A file that can't be read (permissions) is not damage: skipping it would resume from an older
    checkpoint, or start over, so it stops the run before any model loads, naming the fix.
    """
    try:
        return _verify(folder)
    except PermissionError as exc:
        raise UserError(
            f"Can't read {exc.filename or folder} ({exc.strerror}), part of {folder.name}, the checkpoint this run "
            f"resumes from. Give your user read access (chmod -R u+rX {folder}) or run as the user who trained, "
            "then run the same command again."
        ) from None


def _verify(folder: Path) -> tuple[dict[str, Any], str | None]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except FileNotFoundError:
        return {}, f"{MANIFEST} is missing (the save never finished)"
    except (ValueError, KeyError, TypeError):
        return {}, f"{MANIFEST} is empty or truncated"
    for name, expected in files.items():
        problem = check_file(folder / name, name, expected)
        if problem:
            return manifest, problem
    return manifest, None


def resume_hint(checkpoints: Path) -> str:
    """How the same command carries on after a fault: from the newest checkpoint that verifies, or from step 0."""
    newest = newest_usable(checkpoints).folder
    if newest is None:
        return "run the same command again (no checkpoint was saved yet, so it starts from step 0)"
    return f"run the same command again to resume from {newest.name} (in {checkpoints})"


def folder_bytes(folder: Path | None) -> int:
    if folder is None or not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def writing_run(what: str, out: Path, log: Any = None, cleanup: Path | None = None) -> AbstractContextManager[None]:
    """disk_faults.writing for a training run's results folder: the paragraph names the checkpoint to resume from.

    The space a step needs is estimated by the newest checkpoint's size: a final adapter is smaller.
    """
    checkpoints = out / "checkpoints"
    return writing(what, out, lambda: resume_hint(checkpoints), lambda: folder_bytes(newest_usable(checkpoints).folder),
                   log, cleanup)  # fmt: skip
