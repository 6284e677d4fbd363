"""A bounded line for generation: some requests run, a few wait, the rest get 429 at once.

Past `waiting` queued requests, the server says 429 immediately rather than letting clients
time out in a line they can't see. Two runners fill the running places:
- `BatchScheduler` (batching.py, the default): up to `max_batch` requests decode together and
  newcomers join between steps;
- `OneAtATime` (serve --max-batch 1): one generate() at a time, as before batching.
A place is freed when its generation ends, and a job whose client has gone ends at the next
token (both runners check the flag), so a dropped stream can't hold the line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from tuneforge.serving.errors import OpenAIError
from tuneforge.serving.jobs import Job


class Runner(Protocol):
    def submit(self, job: Job, started: Callable[[], None], finished: Callable[[], None]) -> Future: ...

    def shutdown(self) -> None: ...


class RequestQueue:
    def __init__(self, waiting: int, runner: Runner, running: int = 1) -> None:
        self.limit = running + waiting
        self.held = 0  # running + waiting; touched only on the event loop thread
        self.running = 0
        self.runner = runner

    def submit(self, job: Job) -> asyncio.Future:
        """Start or queue the job; 429 when the line is full. Await the result on the loop."""
        if self.held >= self.limit:
            raise OpenAIError(
                429, f"The server is busy: {self.held} requests are running or waiting (the limit is {self.limit}). "
                "Retry in a moment.", code="rate_limit_exceeded",
            )  # fmt: skip
        loop = asyncio.get_running_loop()
        self.held += 1
        future = self.runner.submit(
            job, lambda: _call_soon(loop, self._started), lambda: _call_soon(loop, self._finished)
        )
        future.add_done_callback(lambda _: _call_soon(loop, self._release))
        return asyncio.wrap_future(future, loop=loop)

    def _started(self) -> None:
        self.running += 1

    def _finished(self) -> None:
        self.running -= 1

    def _release(self) -> None:
        self.held -= 1

    def stats(self) -> dict[str, int]:
        return {"running": self.running, "waiting": self.held - self.running, "limit": self.limit}

    def shutdown(self) -> None:
        self.runner.shutdown()


class OneAtATime:
    """One `work(job)` at a time on a worker thread: torch already spreads one generation over the cores."""

    def __init__(self, work: Callable[[Job], Any]) -> None:
        self.work = work
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuneforge-generate")

    def submit(self, job: Job, started: Callable[[], None], finished: Callable[[], None]) -> Future:
        return self._executor.submit(self._run, job, started, finished)

    def _run(self, job: Job, started: Callable[[], None], finished: Callable[[], None]) -> Any:
        if job.cancelled.is_set():  # the client left while waiting: skip the work
            return None
        started()
        try:
            return self.work(job)
        except BaseException:
            if job.streamer is not None:  # unblock the reader; generate() only ends it on success
                job.streamer.end()
            raise
        finally:
            finished()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    """From the worker thread; at shutdown the loop may already be closed, and then nothing is waiting."""
    try:
        loop.call_soon_threadsafe(fn)
    except RuntimeError:
        pass


def cancel(job: Job, future: Future | asyncio.Future | None = None) -> None:
    """The client has gone: stop the job at its next token, or drop it if it hasn't started."""
    job.cancelled.set()
    if future is not None:
        future.cancel()
