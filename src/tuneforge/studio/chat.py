"""Chat with a finished run, or its base model, streamed token by token.

It reuses the server's engine (serving/loading.py): safetensors only, no remote code, and
'base' answers with the adapter switched off, so one copy of the base weights serves both.
One engine stays loaded (the last run chatted with); one answer is generated at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

TUNED = "tuned"


class ChatEngines:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: tuple[Path, Any] | None = None

    def engine(self, folder: Path) -> Any:
        from tuneforge.serving.loading import AdapterSpec, base_model_name, load_engine, parse_adapter_specs

        if self._loaded and self._loaded[0] == folder:
            return self._loaded[1]
        self._loaded = None  # free the previous model before loading the next
        specs = parse_adapter_specs([f"{TUNED}={folder}"])
        engine = load_engine([AdapterSpec(TUNED, specs[0].path)], base_model_name(specs, None), log=lambda _: None)
        self._loaded = (folder, engine)
        return engine

    def stream(self, folder: Path, messages: list[dict[str, str]], model: str, max_new_tokens: int) -> Iterator[str]:
        """Yields the answer's text as it is generated (greedy, so the same question gives the same answer)."""
        from transformers import TextIteratorStreamer

        from tuneforge.serving.engine import BASE, Job

        if model not in (TUNED, BASE):
            raise UserError(f"Chat model '{model}' is neither '{TUNED}' nor '{BASE}'.")
        with self._lock:
            engine = self.engine(folder)
            ids = engine.chat_ids(messages)
            room = max(engine.context_length - len(ids), 1)
            streamer = TextIteratorStreamer(engine.tokenizer, skip_prompt=True, skip_special_tokens=True)
            job = Job(model=model, input_ids=ids, max_new_tokens=min(max_new_tokens, room), temperature=0.0,
                      streamer=streamer)  # fmt: skip
            worker = threading.Thread(target=engine.generate, args=(job,), daemon=True)
            worker.start()
            try:
                yield from (piece for piece in streamer if piece)
            finally:
                job.cancelled.set()  # the page went away: stop generating
                worker.join()
