"""The live view as server-sent events: the run folder read every poll interval, sent when it changed.

The page's EventSource reconnects by itself, and every event carries the whole state (points,
progress, log tail), so a reload or a dropped connection loses nothing. The stream ends after
the run leaves queued/running; the page then closes its EventSource.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

KEEPALIVE_S = 15.0
LIVE = ("queued", "running")


async def run_events(
    snapshot: Callable[[], dict[str, Any]], poll_s: float, disconnected: Callable[[], Any]
) -> AsyncIterator[str]:
    last, quiet = "", 0.0
    yield f"retry: {int(max(poll_s, 0.5) * 2000)}\n\n"
    while True:
        state = await asyncio.to_thread(snapshot)
        text = json.dumps(state, ensure_ascii=False)
        if text != last:
            yield f"data: {text}\n\n"
            last, quiet = text, 0.0
        elif quiet >= KEEPALIVE_S:
            yield ": keepalive\n\n"
            quiet = 0.0
        if state.get("status") not in LIVE or await disconnected():
            return
        await asyncio.sleep(poll_s)
        quiet += poll_s
