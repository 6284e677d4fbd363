"""One writer per folder: an OS lock held for the life of the process that writes there.

Two `tuneforge train` runs on one results folder used to both resume from the same checkpoint
and then rotate each other's checkpoints away. The lock is an advisory OS lock (`fcntl.flock`,
or `msvcrt.locking` on Windows) on a small file *next to* the folder, `.NAME.tuneforge.lock`:
- the kernel drops it when the process ends, however it ends (SIGKILL, a power cut), so there
  is never a stale lock to clean up, and the next command resumes as before;
- next to the folder, not inside it, so it survives `--overwrite` moving the old run aside and
  `export`'s rename of a finished folder into place, and a results folder holds only results.

The file holds who has it (process id, command, start time, host) so a refusal can name them.
It is removed on a clean release. flock can't tell an unlinked file from the live one, so a
taker checks after locking that the path still names the file it locked, and retries if not.
We write this by hand because `filelock` (the usual library) leaves no record of the holder
and isn't a dependency here.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from tuneforge.errors import UserError

HELD_ENV = "TUNEFORGE_LOCK_HELD"  # the locked folder, set by the `--nproc` parent for its children
WINDOWS_LOCK_OFFSET = 1 << 20  # Windows byte locks are mandatory: lock a byte past the holder's record


def absolute(folder: Path) -> Path:
    """The one spelling of a folder that the lock, its file and HELD_ENV all agree on."""
    return Path(folder).expanduser().absolute()


def lock_path(folder: Path) -> Path:
    folder = absolute(folder)
    return folder.parent / f".{folder.name}.tuneforge.lock"


class FolderLock:
    """An acquired lock; `release()` (or process exit) frees it."""

    def __init__(self, folder: Path, handle: IO[str]) -> None:
        self.folder = folder
        self.path = lock_path(folder)
        self._handle: IO[str] | None = handle

    def release(self) -> None:
        if self._handle is None:
            return
        if os.name != "nt":  # a Windows file can't be removed while it is open
            try:
                self.path.unlink()
            except OSError:
                pass
        _unlock(self._handle)
        self._handle.close()
        self._handle = None


def acquire(folder: Path, what: str = "results folder", fix: str = "") -> FolderLock:
    """Take the folder's lock or raise a UserError that names the process holding it."""
    folder = absolute(folder)
    path = lock_path(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"Can't create the folder '{path.parent}' for the {what} '{folder}' ({exc.strerror})."
        ) from None
    for _ in range(20):
        handle = _open(path, what, folder)
        if not _try_lock(handle):
            holder = _holder(handle)
            handle.close()
            raise held_by_other(folder, holder, what, fix)
        if _still_named(handle, path):
            _write_holder(handle)
            return FolderLock(folder, handle)
        _unlock(handle)  # the previous holder removed this file as we locked it: take the new one
        handle.close()
    raise UserError(f"Could not lock '{path}': other processes keep replacing it. Try again in a moment.")


@contextmanager
def holding(folder: Path, what: str = "results folder", fix: str = "") -> Iterator[FolderLock | None]:
    """`with holding(out):` the lock for the block, unless our `--nproc` parent holds it."""
    if os.environ.get(HELD_ENV) == str(absolute(folder)):
        yield None
        return
    lock = acquire(folder, what, fix)
    try:
        yield lock
    finally:
        lock.release()


def holder_of(folder: Path) -> dict[str, Any] | None:
    """Who holds a folder's lock right now (pid, command, started, host), or None when no one does.

    The studio asks this to tell a run training in another process (its own child from before a
    restart, or a `tuneforge train` typed in a terminal) from a stopped one. It only reads: taking
    the lock even for an instant could make a `train` starting at that moment refuse the folder.
    A clean release removes the file; a killed holder leaves its record, so the process it names
    must still be alive (and not a zombie) on this machine.
    """
    import psutil

    try:
        record = json.loads(lock_path(folder).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("host") != socket.gethostname():
        return None
    try:
        alive = psutil.Process(int(record.get("pid", -1))).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        alive = False
    return record if alive else None


def held_by_other(folder: Path, holder: dict[str, Any], what: str, fix: str) -> UserError:
    pid = holder.get("pid", "unknown")
    who = f"process {pid}"
    if holder.get("command"):
        who += f", `{holder['command']}`"
    if holder.get("started"):
        who += f", started {holder['started']}"
    if holder.get("host") and holder["host"] != socket.gethostname():
        who += f", on the machine {holder['host']}"
    return UserError(
        f"The {what} '{folder}' is being written by another tuneforge process right now ({who}). "
        "Two writers in one folder would overwrite each other's checkpoints and files. Wait for it to "
        f"finish, stop it with Ctrl-C in its terminal (or `kill {pid}`; it saves, and the same command "
        f"then resumes), or {fix or 'choose another folder'}."
    )


def _open(path: Path, what: str, folder: Path) -> IO[str]:
    try:
        # "a+": opening must never truncate the record of a process that holds the lock
        return path.open("a+", encoding="utf-8")
    except OSError as exc:
        raise UserError(
            f"Can't write next to the {what} '{folder}' ({exc.strerror}: {path}). Choose a folder you own."
        ) from None


def _try_lock(handle: IO[str]) -> bool:
    if os.name == "nt":
        import msvcrt

        handle.seek(WINDOWS_LOCK_OFFSET)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(handle: IO[str]) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(WINDOWS_LOCK_OFFSET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        return
    import fcntl

    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _still_named(handle: IO[str], path: Path) -> bool:
    if os.name == "nt":
        return True
    try:
        here, there = os.fstat(handle.fileno()), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def this_command() -> str:
    """The command as the user typed it: `tuneforge train ...`, whichever way Python was started."""
    program = Path(sys.argv[0]).name if sys.argv else ""
    if program in ("tuneforge", "tuneforge.exe", "__main__.py"):
        return shlex.join(["tuneforge", *sys.argv[1:]])
    return shlex.join(sys.argv)


def _write_holder(handle: IO[str]) -> None:
    record = {
        "pid": os.getpid(),
        "command": this_command(),
        "started": datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        "host": socket.gethostname(),
    }
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(record))
    handle.flush()


def _holder(handle: IO[str]) -> dict[str, Any]:
    """The holder's record; it may be a moment from being written, so look twice before giving up."""
    for attempt in range(5):
        handle.seek(0)
        try:
            record = json.loads(handle.read(4096) or "null")
        except ValueError:
            record = None
        if isinstance(record, dict):
            return record
        time.sleep(0.1 * (attempt + 1))
    return {}
