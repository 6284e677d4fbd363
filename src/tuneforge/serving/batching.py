"""Step-level batching: requests that arrive while a batch decodes join it at the next step.

One scheduler thread owns the model. Between two decode steps it takes waiting requests into
the batch (up to `max_batch` rows), prefills each, and after each step hands finished
answers back; their rows leave at once, so a short answer never waits for a long one. A row
whose client has gone is dropped at the next step, freeing its place for the next request.

Why batch on a CPU: one decode step reads every weight once from memory, whatever the number
of rows, and reading the weights is most of a step's cost for a small model. Eight rows cost
little more than one, so eight clients share one stream of weight reads instead of queueing.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from tuneforge.serving.decoding import Batch
from tuneforge.serving.jobs import Job, Result

log = logging.getLogger("tuneforge.serve")


@dataclass
class _Ticket:
    job: Job
    future: Future
    started: Callable[[], None]
    finished: Callable[[], None]


class BatchScheduler:
    """Runs the batch on its own thread; `submit` from any thread, the result comes in a Future."""

    def __init__(self, engine: Any, max_batch: int) -> None:
        self.engine, self.max_batch = engine, max_batch
        self._waiting: deque[_Ticket] = deque()
        self._running: dict[int, _Ticket] = {}  # id(job) -> ticket, for the rows in the batch
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="tuneforge-batch", daemon=True)
        self._thread.start()

    def submit(self, job: Job, started: Callable[[], None], finished: Callable[[], None]) -> Future:
        future: Future = Future()
        with self._wake:
            self._waiting.append(_Ticket(job, future, started, finished))
            self._wake.notify()
        return future

    def shutdown(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _loop(self) -> None:
        import torch

        batch = Batch(self.engine.model, self.engine.tokenizer, self.engine.stop_ids)
        while True:
            with self._wake:
                while not self._closed and not self._waiting and not len(batch):
                    self._wake.wait()
                if self._closed:
                    return
                admitted = self._admit(batch)
            try:
                with torch.inference_mode():
                    self._advance(batch, admitted)
            except Exception as exc:  # noqa: BLE001  any failure fails the rows in the batch, never the thread
                log.error("batched generation failed", exc_info=exc)
                for ticket in [*admitted, *self._running.values()]:
                    self._settle(ticket, exc)
                batch = Batch(self.engine.model, self.engine.tokenizer, self.engine.stop_ids)

    def _admit(self, batch: Batch) -> list[_Ticket]:
        """Waiting requests, first come first served, while there is room and they share the batch's lane."""
        router = self.engine.router
        lane = router.lane(batch.rows[0].job.model) if len(batch) else None
        admitted: list[_Ticket] = []
        while self._waiting and len(batch) + len(admitted) < self.max_batch:
            ticket = self._waiting[0]
            lane = lane or router.lane(ticket.job.model)
            if router.lane(ticket.job.model) != lane:
                break  # a merged adapter and 'base' can't share weights: it waits for this batch to end
            self._waiting.popleft()
            if not ticket.future.set_running_or_notify_cancel() or ticket.job.cancelled.is_set():
                self._settle(ticket, None)  # the client left while waiting: skip the work
                continue
            admitted.append(ticket)
        return admitted

    def _advance(self, batch: Batch, admitted: list[_Ticket]) -> None:
        """Prefill the newcomers into the batch, then one decode step for all rows."""
        while admitted:
            ticket = admitted.pop(0)
            ticket.started()
            self._running[id(ticket.job)] = ticket
            ended, result = batch.join(ticket.job, self.engine.forward)
            if ended:
                self._settle(ticket, result)
        if len(batch):
            batch.step(self.engine.forward)
            for row, result in batch.harvest():
                self._settle(self._running[id(row.job)], result)

    def _settle(self, ticket: _Ticket, outcome: Result | BaseException | None) -> None:
        """Hand the outcome over; a ticket that had started frees its running slot."""
        started = self._running.pop(id(ticket.job), None) is not None
        if isinstance(outcome, BaseException):
            if ticket.job.streamer is not None:  # unblock the reader of a stream that will never end
                ticket.job.streamer.end()
            if not ticket.future.done():
                ticket.future.set_exception(outcome)
        elif not ticket.future.done():
            ticket.future.set_result(outcome)
        if started:
            ticket.finished()
