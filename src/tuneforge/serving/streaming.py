"""Server-sent events in the OpenAI stream format: `data: {chunk}` lines, then `data: [DONE]`.

The text comes from transformers' AsyncTextIteratorStreamer as generate() produces it. Two
things are added by hand here, because no library does them the OpenAI way:
- stop sequences are cut out of the stream. Generation stops *after* a stop sequence, and it
  may arrive split over two pieces, so the last few characters are held back until it is
  clear they are not the start of one;
- the response closes its job however it ends, so a client that disconnects mid-stream frees
  its place in the queue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from tuneforge.serving.engine import Result, cut_at_stop
from tuneforge.serving.errors import server_error

DONE = "data: [DONE]\n\n"
log = logging.getLogger("tuneforge.serve")


def sse(payload: BaseModel | dict[str, Any]) -> str:
    data = payload.model_dump_json(exclude_none=False) if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {data}\n\n"


async def until_stop(pieces: AsyncIterable[str], stops: list[str]) -> AsyncIterator[str]:
    """The streamed text, ending just before the first stop sequence."""
    hold = max((len(s) for s in stops), default=1) - 1
    buffer = ""
    async for piece in pieces:
        buffer, stopped = cut_at_stop(buffer + piece, stops)
        if stopped:
            if buffer:
                yield buffer
            return  # generate() ends by itself: its stopping criterion saw the same text
        ready = len(buffer) - hold
        if ready > 0:
            yield buffer[:ready]
            buffer = buffer[ready:]
    if buffer:
        yield buffer


async def event_stream(job: Any, outcome: Any, shape: Any, usage_chunk: bool) -> AsyncIterator[str]:
    """Opening chunk, text chunks, the finish chunk, the usage chunk if asked for, [DONE].

    `shape` (responses.py) builds each chunk in the chat or the text-completion format.
    """
    opening = shape.opening()
    if opening is not None:
        yield sse(opening)
    try:
        async for text in until_stop(job.streamer, job.stop):
            yield sse(shape.piece(text))
        result: Result = await outcome
    except Exception as exc:  # headers are sent already: report in the stream, as OpenAI does
        log.error("streamed generation failed", exc_info=exc)
        yield sse(server_error(exc).body())
        yield DONE
        return
    yield sse(shape.finish(result.finish_reason))
    if usage_chunk:
        yield sse(shape.usage(result))
    yield DONE


class GuardedStream(StreamingResponse):
    """A streaming response that runs `on_close` however it ends: finished, client gone, or error."""

    def __init__(self, content: AsyncIterable[str], on_close: Callable[[], None]) -> None:
        super().__init__(
            content, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()
