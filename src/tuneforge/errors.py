"""The one error type users see: a short paragraph and exit code 2, never a traceback."""

from __future__ import annotations

EXIT_USAGE = 2


class UserError(Exception):
    """A problem the user can fix: bad input, a missing file, a setting that can't work.

    The message is the whole story: which field or file, which value, and what to do.
    The CLI prints it as one paragraph and exits 2; `--debug` shows the traceback instead.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def not_available_yet(command: str) -> UserError:
    """Commands that later issues fill in answer this instead of a half-working stub."""
    return UserError(f"`tuneforge {command}` is not available yet in this version of tuneforge.")


class Stopped(Exception):
    """Training stopped on request (Ctrl-C, SIGTERM) after saving a checkpoint.

    Not an error: the message says how to resume, and the CLI exits with the shell's code for
    the signal (130 for SIGINT, 143 for SIGTERM) so scripts and schedulers see what happened.
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
