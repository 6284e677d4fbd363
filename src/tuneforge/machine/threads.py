"""How the model's CPU work gets its threads: OpenMP's wait policy, and which thread loads the model.

PyTorch's Linux wheels run the parallel parts of CPU kernels on GNU OpenMP (libgomp) thread teams.
Two of libgomp's habits decide how fast a server on a small CPU answers:

- Idle team threads spin for a while before they sleep (`OMP_WAIT_POLICY`). A forward of a small
  model is ~1,500 short parallel regions back to back, so a sleeping team pays a wake-up at each.
  On a quiet 2-core machine `OMP_WAIT_POLICY=PASSIVE` (sleep at once) made 32 greedy tokens take
  2.31 s instead of 1.37 s, and halved a batched server's tokens/s (31.5 vs 56.7). On a machine
  whose cores are already busy, spinning threads fight the other jobs instead: there PASSIVE won
  (2.73 vs 3.93 s with two busy processes; 2.1 vs 12-16 s measured earlier beside other training
  jobs). `tuneforge serve` keeps the default; the studio, which trains beside its chat, and a
  user who sets OMP_WAIT_POLICY=PASSIVE get sleeping threads.
- Every thread that starts parallel work gets its own team, and a team lives as long as its
  thread. With the main thread's team (made while loading the model) and the decode thread's both
  alive, libgomp counts more threads than cores and cuts spinning to almost nothing: a 37-token
  prompt took 140 ms on the decode thread against 87 ms on the thread that loaded the model, and
  8 clients got 33.4 instead of 57.2 tokens/s. Loading on a thread that ends with the load
  (`on_passing_thread`) leaves one team: the decode thread's.

Measured on a 2-core Xeon with AMX, torch 2.13; commands in docs/PERFORMANCE.md (serving).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def prefer_passive_threads() -> None:
    """Idle OpenMP threads sleep at once (OMP_WAIT_POLICY=PASSIVE); call before torch loads; a user's value wins.

    For the studio, whose chat shares the machine with the training runs it starts: there spinning
    threads fight the training for the cores. `tuneforge serve` keeps OpenMP's default, which is
    faster on a machine the server has to itself (figures above); on a shared machine set
    OMP_WAIT_POLICY=PASSIVE in its environment.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def on_passing_thread(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `work` on a new thread that ends with it, and return its result (or raise its error).

    For loading a model that another thread will run: the OpenMP team the load starts goes away
    with this thread, instead of staying on the caller's.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001  handed back to the caller's thread, raised there
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="tuneforge-load")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
