"""Writes that fail because of the filesystem: disk full, read-only, or the results folder gone.

One home for turning those into one paragraph and exit 2 (the run's resume point is added by
runs/checkpoint_store.py: `writing_run`). Before this, a full disk while saving
a checkpoint ended a run with two chained tracebacks (the save, then a second write failing the
same way while handling the first). Here each write site runs inside `writing(...)`: an
ENOSPC/EDQUOT, EROFS/EACCES/EPERM, or a missing results folder becomes a `DiskFault` naming what
was being written, the space free against the space needed, and "free space, then run the same
command again to resume from checkpoint-N". The newest committed checkpoint is never touched, so
the same command resumes from it.

torch and safetensors lose the errno on the way up (torch: "PytorchStreamWriter failed writing
file", safetensors: "... (os error 28)"), so their messages count too.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

FULL = (errno.ENOSPC, errno.EDQUOT)
DENIED = (errno.EACCES, errno.EPERM)  # a fault of this folder only when the file is in it: not a model read
FULL_TEXT = ("no space left on device", "disk quota exceeded", "os error 28", "os error 122")
READ_ONLY_TEXT = ("read-only file system", "os error 30")
WRITER_TEXT = ("pytorchstreamwriter failed writing", "file write failed")  # torch.save drops the errno


class DiskFault(UserError):
    """A write the filesystem refused; the message says what, why, and how to resume."""


def kind_of(exc: BaseException, folder: Path) -> str | None:
    """'full', 'read-only', 'gone' (the folder written to no longer exists) or None: not a filesystem fault."""
    number = getattr(exc, "errno", None)
    text = str(exc).lower()
    if number in FULL or any(t in text for t in FULL_TEXT):
        return "full"
    if number == errno.EROFS or any(t in text for t in READ_ONLY_TEXT):
        return "read-only"
    if number in DENIED and inside(getattr(exc, "filename", None), folder):
        return "read-only"
    writer_failed = any(t in text for t in WRITER_TEXT)  # torch.save says no more than "write failed"
    if not folder.is_dir() and (number == errno.ENOENT or writer_failed):
        return "gone"  # the folder it wrote into is no longer there
    if writer_failed:
        return "full"  # a full disk is what makes torch's writer fail
    return None


def inside(filename: object, folder: Path) -> bool:
    if not isinstance(filename, str | os.PathLike):
        return False
    return Path(filename).absolute().is_relative_to(folder.absolute())


def free_bytes(folder: Path) -> int | None:
    """Free space where `folder` lives (its nearest existing parent), or None when nothing can be asked."""
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def mb(count: int) -> str:
    return f"{count / 1e6:,.0f} MB" if count >= 1e6 else f"{count / 1e3:,.0f} kB"


def describe_fault(kind: str, exc: BaseException, what: str, folder: Path, then: str, need: int) -> str:
    """The paragraph: what was being written, why it failed, the space, and the way back."""
    filename = getattr(exc, "filename", None)
    where = f" ({filename})" if filename else ""
    if kind == "gone":
        return (f"The folder {folder} was removed or renamed while the run was about to write {what}, so it "
                "stopped rather than write half a run somewhere else. Put the folder back where it was (rename it "
                "back), then run the same command again to resume from its newest checkpoint; if the folder is "
                "gone for good, the same command starts over.")  # fmt: skip
    if kind == "read-only":
        return (f"Can't write {what} in {folder}{where}: {getattr(exc, 'strerror', None) or exc}. The folder became "
                f"read-only or not yours to write. Make it writable again (or free the quota), then {then}.")  # fmt: skip
    free = free_bytes(folder)
    space = f"{mb(free)} free there" if free is not None else "free space unknown"
    if need:
        space += f"; this step needs about {mb(need)}"
    return (f"The disk is full: writing {what} in {folder}{where} failed ({space}). Nothing committed was lost. "
            f"Free space, then {then}.")  # fmt: skip


def end_log(log: Any, message: str) -> None:
    """The log file ends with the same paragraph, if it can still be written; never a second error."""
    if log is None:
        return
    try:
        log.info(f"Error: {message}", show=False)
    except (OSError, UserError):
        pass


@contextmanager
def writing(what: str, folder: Path, then: Callable[[], str] | None = None, need: Callable[[], int] | None = None,
            log: Any = None, cleanup: Path | None = None) -> Iterator[None]:  # fmt: skip
    """Run a write; a filesystem fault becomes one DiskFault paragraph (and the log's last line).

    `then` says how to carry on and `need` the bytes the step needs, both asked only after a
    fault (the newest checkpoint may have been committed a moment before); `cleanup` is a
    half-written staging folder to remove at once, so its space comes back.
    """
    try:
        yield
    except DiskFault as fault:
        end_log(log, str(fault))
        raise
    except (OSError, RuntimeError) as exc:
        kind = kind_of(exc, folder)
        if kind is None:
            raise
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        hint = then() if then is not None else "run the same command again"
        message = describe_fault(kind, exc, what, folder, hint, need() if need is not None else 0)
        end_log(log, message)
        raise DiskFault(message) from None


def identity(folder: Path) -> tuple[int, int]:
    """(device, inode): a folder renamed away and another made in its place do not compare equal."""
    stat = os.stat(folder)
    return stat.st_dev, stat.st_ino


def check_still_there(folder: Path, expected: tuple[int, int] | None, what: str) -> None:
    """Before a save: the results folder must still be the one the run started in, or nothing is written."""
    if expected is None:
        return
    try:
        same = identity(folder) == expected
    except OSError:
        same = False
    if not same:
        gone = FileNotFoundError(errno.ENOENT, "the folder is gone")
        raise DiskFault(describe_fault("gone", gone, what, folder, "", 0))
