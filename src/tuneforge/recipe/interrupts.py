"""Ctrl-C and SIGTERM during training: finish the step, save a checkpoint, stop; a second one quits at once.

The signal only sets a flag; the Trainer acts on it at the end of the step through the usual
`should_save` / `should_training_stop` controls, so the checkpoint goes through the same atomic
save as every other. Quitting at once on the second signal is safe because a checkpoint is
only ever committed whole.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from transformers import TrainerCallback

from tuneforge.recipe.distributed import world_size

HANDLED = (signal.SIGINT, signal.SIGTERM)
REPEAT_WINDOW_S = 2.0  # torchrun passes the terminal's Ctrl-C on, so one press can arrive twice


class StopOnSignal(TrainerCallback):
    def __init__(self, log: Any) -> None:
        self.log = log
        self.code: int | None = None  # 130 for SIGINT, 143 for SIGTERM: the shell's 128 + signal number
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}
        self._unlogged: str | None = None  # the stop message, until on_step_end writes it to the log

    def __enter__(self) -> StopOnSignal:
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.code is None:
            self.code, self._first_at = 128 + signum, now
            name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
            self._unlogged = (
                f"{name}: stopping after this step and saving a checkpoint. Press Ctrl-C again to quit at once."
            )
            # Straight to the terminal, unbuffered: the signal can land while the log file is inside a write
            # or flush, and a buffered file written again from here raised "reentrant call" and killed the run
            # (seen when a studio's Stop arrived mid-log-line). The log gets the line at the step's end.
            os.write(sys.stderr.fileno(), f"\n{self._unlogged}\n".encode())
            return
        if now - self._first_at < REPEAT_WINDOW_S:
            return
        sys.stderr.write("\nQuitting now. The last saved checkpoint is intact: run the same command again to resume.\n")
        sys.stderr.flush()
        os._exit(self.code)  # no cleanup on purpose: the user asked to leave now

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._unlogged is not None:
            self.log.info(self._unlogged, show=False)  # the terminal had it when the signal came
            self._unlogged = None
        if self._agreed():
            control.should_save = True
            control.should_training_stop = True

    def _agreed(self) -> bool:
        """Under DDP every rank must stop at the same step, or the others wait forever in the next all-reduce."""
        requested = self.code is not None
        if world_size() == 1:
            return requested
        import torch
        import torch.distributed as dist

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([1 if requested else 0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.code is None:
            self.code = 143  # another rank got the signal; this one saves and stops with it
        return bool(flag.item())
