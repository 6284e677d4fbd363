"""The FastAPI app: the OpenAI routes, the health probe and the chat page, all in one process.

`create_app(engine)` takes an already loaded Engine, so tests can build the app around a tiny
model (or a fake one) without a port, and `run_serve` can load the model before it binds.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from tuneforge.serving.engine import Engine, Job
from tuneforge.serving.errors import OpenAIError, install_error_handlers
from tuneforge.serving.guards import Guards
from tuneforge.serving.limits import Limits
from tuneforge.serving.request_queue import OneAtATime, RequestQueue, cancel
from tuneforge.serving.responses import ChatShape, TextShape
from tuneforge.serving.schemas import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList, Sampling
from tuneforge.serving.streaming import GuardedStream, event_stream
from tuneforge.serving.tool_calls import prompt_ids, request_messages

# The page may load only its own files and talk only to this server: no CDN, no inline script.
PAGE_POLICY = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:"
COMPLETION_DEFAULT_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the cap


def create_app(engine: Engine, *, api_key: str | None = None, limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    queue = RequestQueue(limits.queue_size, _runner(engine, limits.max_batch), running=limits.max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        queue.shutdown()

    # The interactive /docs page loads its script from a CDN, which breaks offline; the schema stays.
    app = FastAPI(title="tuneforge", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.engine, app.state.queue, app.state.limits = engine, queue, limits
    app.state.started = int(time.time())
    install_error_handlers(app)
    app.add_middleware(Guards, api_key=api_key, max_body_bytes=limits.max_body_bytes)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(static_dir())), name="static")
    return app


def _runner(engine: Engine, max_batch: int) -> Any:
    """Batched decoding, or one generate() at a time with --max-batch 1 (the path before batching)."""
    if max_batch == 1:
        return OneAtATime(engine.generate)
    from tuneforge.serving.batching import BatchScheduler

    return BatchScheduler(engine, max_batch)


def static_dir() -> Any:
    return resources.files("tuneforge") / "static"


router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    return {"status": "ok", "queue": request.app.state.queue.stats()}


@router.get("/", include_in_schema=False)
async def page() -> Response:
    headers = {"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"}
    return FileResponse(str(static_dir() / "chat.html"), media_type="text/html", headers=headers)


@router.get("/v1/models")
async def models(request: Request) -> ModelList:
    created = request.app.state.started
    return ModelList(data=[ModelCard(id=name, created=created) for name in request.app.state.engine.names])


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    engine: Engine = request.app.state.engine
    engine.check_model(body.model)
    tools = body.tool_list()
    if tools and body.stream:
        raise OpenAIError(400, "Streaming with tools is not supported yet; send stream: false to get tool_calls.",
                          param="stream")  # fmt: skip
    ids = prompt_ids(engine, request_messages(body.messages), tools)  # 'developer' turns become 'system'
    job = _job(request, body, ids, request.app.state.limits.max_tokens_cap, "messages")
    return await _answer(request, body, job, ChatShape(body.model, tools=bool(tools)))


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    engine: Engine = request.app.state.engine
    engine.check_model(body.model)
    ids = engine.text_ids(body.prompt_text())
    job = _job(request, body, ids, COMPLETION_DEFAULT_TOKENS, "prompt")
    return await _answer(request, body, job, TextShape(body.model))


def _job(request: Request, body: Any, ids: list[int], default_tokens: int, param: str) -> Job:
    engine: Engine = request.app.state.engine
    cap = request.app.state.limits.max_tokens_cap
    tokens = engine.plan_tokens(len(ids), body.requested_tokens(), cap, default_tokens, param)
    return Job(
        model=body.model, input_ids=ids, max_new_tokens=tokens, stop=body.stops(), seed=body.seed,
        temperature=1.0 if body.temperature is None else body.temperature,  # OpenAI's defaults
        top_p=1.0 if body.top_p is None else body.top_p,
    )  # fmt: skip


async def _answer(request: Request, body: Sampling, job: Job, shape: Any) -> Response:
    engine: Engine = request.app.state.engine
    queue: RequestQueue = request.app.state.queue
    if body.stream:
        from transformers import AsyncTextIteratorStreamer

        job.streamer = AsyncTextIteratorStreamer(engine.tokenizer, skip_prompt=True, skip_special_tokens=True)
        outcome = queue.submit(job)
        events = event_stream(job, outcome, shape, body.wants_usage_chunk())
        return GuardedStream(events, on_close=lambda: cancel(job, outcome))
    outcome = queue.submit(job)
    if not await _finished_before_disconnect(request, outcome):
        cancel(job, outcome)
        return Response(status_code=499)  # nginx's "client closed request"; nobody is left to read it
    return JSONResponse(shape.whole(outcome.result()).model_dump())


async def _finished_before_disconnect(request: Request, outcome: asyncio.Future) -> bool:
    """Wait for the answer, but notice a client that gives up, so its slot goes to the next one."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({outcome, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    return outcome.done()
