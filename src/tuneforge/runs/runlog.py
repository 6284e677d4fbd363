"""One place for run events: a plain log file you can `tail -f`, and the same lines on screen."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from rich.console import Console

from tuneforge.runs.checkpoint_store import writing_run


class RunLog:
    """Writes each event as one timestamped line, flushed at once so `tail -f` sees it live."""

    def __init__(self, folder: Path, console: Console | None = None) -> None:
        stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
        self.path = folder / f"training_log_{stamp}.log"
        self.console = console or Console(highlight=False)
        self._file = self.path.open("a", encoding="utf-8")
        self.started = time.monotonic()

    def info(self, message: str, show: bool = True) -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with writing_run(f"the training log {self.path.name}", self.path.parent):
            for line in message.splitlines() or [""]:
                self._file.write(f"{stamp} {line}\n")
            self._file.flush()
        if show:
            self.console.print(message, markup=False)

    def section(self, title: str) -> None:
        self.info(f"== {title} ==")

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:  # the last flush on a full disk: the error that stopped the run was already said
            pass
