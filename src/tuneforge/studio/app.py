"""The studio's FastAPI app: the page, and the small JSON API under /api that the page and scripts use.

Every route sits behind security.guard (Host, Origin, token). Errors are JSON `{"error": ...}`
with the same one-paragraph text the CLI prints, never a bare 500.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware

from tuneforge.errors import UserError
from tuneforge.studio import catalog, commands_argv, discovery, i18n
from tuneforge.studio.chat import ChatEngines
from tuneforge.studio.events import run_events
from tuneforge.studio.jobs import JobQueue, Pump
from tuneforge.studio.security import TOKEN_COOKIE, guard
from tuneforge.studio.settings import StudioSettings
from tuneforge.studio.uploads import UploadError, save_upload

STATIC = Path(__file__).parent / "static"


def create_app(settings: StudioSettings) -> FastAPI:
    """One app per launch; its job queue reattaches to whatever `<data>/jobs.json` says is running."""
    for folder in (settings.runs_dir, settings.data_dir):
        folder.mkdir(parents=True, exist_ok=True)
    queue = JobQueue(settings)
    pump = Pump(queue, settings.poll_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        queue.pump()
        pump.start()
        yield
        pump.close()  # children keep running: a studio restart must not stop a run

    app = FastAPI(title="tuneforge studio", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.queue, app.state.chat = settings, queue, ChatEngines()
    app.middleware("http")(guard(settings))
    # The page, its script and the JSON, gzipped (about a third of the bytes); never the event stream (Starlette
    # leaves text/event-stream alone) nor downloads, sent as octet-stream: gzip gains nothing on model weights.
    app.add_middleware(GZipMiddleware, minimum_size=1000, compresslevel=6,
                       exclude_content_types=(*DEFAULT_EXCLUDED_CONTENT_TYPES, "application/octet-stream"))  # fmt: skip
    _errors(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _page_routes(app, settings)
    _run_routes(app, settings, queue)
    _action_routes(app, settings, queue)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(UserError)
    async def user_error(_: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def any_error(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"The studio hit an unexpected error: {type(exc).__name__}: {exc}"}, 500)


def _page_routes(app: FastAPI, settings: StudioSettings) -> None:
    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        lang = i18n.pick(request.headers.get("accept-language", ""))
        page = (STATIC / "studio.html").read_text(encoding="utf-8")
        page = page.replace("{{lang}}", lang).replace("{{token}}", settings.token)
        response = HTMLResponse(page, headers={"Cache-Control": "no-store"})
        if request.query_params.get("token"):  # beyond loopback: later requests carry the token as a cookie
            response.set_cookie(TOKEN_COOKIE, settings.token, httponly=True, samesite="strict")
        return response

    @app.get("/api/i18n")
    def strings() -> dict[str, Any]:
        return i18n.STRINGS

    @app.get("/api/defaults")
    def defaults() -> dict[str, Any]:
        """Presets, the methods `train --method` takes and the dataset each reads when none is typed."""
        from typing import get_args

        from tuneforge.config import METHOD_DEFAULTS, TrainSection, default_values
        from tuneforge.presets import DATASET_PRESETS, MODEL_PRESETS

        methods = list(get_args(TrainSection.model_fields["method"].annotation))
        plain = default_values()["data.dataset"]
        datasets = {method: METHOD_DEFAULTS.get(method, {}).get("data.dataset", plain) for method in methods}
        return {"models": list(MODEL_PRESETS), "datasets": list(DATASET_PRESETS), "runs_dir": str(settings.runs_dir),
                "methods": methods, "method_datasets": datasets}  # fmt: skip

    @app.get("/api/resolve")
    def resolve(path: str, field: str = "data") -> dict[str, Any]:
        """A typed name, resolved as `train` will: the page shows exactly which file or folder will be read."""
        from tuneforge.studio.typed_paths import PATH_SETTINGS, resolve_typed

        if field not in PATH_SETTINGS.values():
            raise HTTPException(400, f"'field' is one of {', '.join(PATH_SETTINGS.values())}, not '{field}'.")
        return resolve_typed(path, field)

    @app.post("/api/uploads", status_code=201)
    async def upload(request: Request, name: str) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        try:
            saved = await save_upload(settings.uploads, name, int(declared) if declared else None,
                                      request.stream(), settings.upload_cap)  # fmt: skip
        except UploadError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return {"path": str(saved), "name": saved.name, "size": saved.stat().st_size}


def _run_routes(app: FastAPI, settings: StudioSettings, queue: JobQueue) -> None:
    def known(run: str) -> str:
        if not discovery.RUN_NAME.match(run) or run not in catalog.known_runs(settings.runs_dir, queue):
            raise HTTPException(404, f"There is no run '{run}' in {settings.runs_dir}.")
        return run

    @app.get("/api/runs")
    def runs() -> dict[str, Any]:
        return {"runs": catalog.list_runs(settings.runs_dir, queue)}

    @app.get("/api/compare")
    def compare(runs: list[str] = Query(...)) -> dict[str, Any]:
        """Runs side by side (`?runs=a&runs=b`): each one's loss curve, and their figures under one set of keys."""
        if not 2 <= len(runs) <= 4:
            raise UserError(f"Compare takes 2 to 4 runs (?runs=a&runs=b), not {len(runs)}.")
        shown = [catalog.describe(settings.runs_dir, queue, known(run)) for run in runs]
        fields = ("id", "status", "model", "data", "method", "step", "points", "figures")
        return {"runs": [{key: run[key] for key in fields} for run in shown],
                "figures": list(dict.fromkeys(key for run in shown for key in run["figures"]))}  # fmt: skip

    @app.post("/api/runs", status_code=201)
    def start(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        run = str(body.get("name") or time.strftime("run-%Y%m%d-%H%M%S"))
        if not discovery.RUN_NAME.match(run):
            raise UserError(f"The run name '{run}' may use letters, digits, '.', '_' and '-' only (at most 80).")
        if run in catalog.known_runs(settings.runs_dir, queue):
            raise HTTPException(409, f"A run named '{run}' exists already; pick another name, or resume it.")
        values = body.get("settings") or {}
        if not isinstance(values, dict):
            raise UserError("'settings' must be an object of config keys, e.g. {\"train.max_steps\": 20}.")
        job_file = settings.jobs_dir / f"{run}.yaml"
        job = queue.submit("train", run, commands_argv.train_argv(settings, job_file, run, values))
        return {"id": run, "job": job.public("")}

    @app.get("/api/runs/{run}")
    def one(run: str) -> dict[str, Any]:
        return catalog.describe(settings.runs_dir, queue, known(run))

    @app.post("/api/runs/{run}/stop")
    def stop(run: str) -> dict[str, Any]:
        job = queue.active(known(run))
        if job is None:
            raise HTTPException(409, f"The run '{run}' is not queued or running, so there is nothing to stop.")
        queue.stop(job)
        return {"id": run, "stopping": job.id}

    @app.post("/api/runs/{run}/resume", status_code=201)
    def resume(run: str) -> dict[str, Any]:
        status, _ = catalog.run_state(known(run), settings.runs_dir / run, queue)
        started = queue.for_run(run, "train")
        if status not in ("stopped", "failed") or not started:
            raise HTTPException(409, f"The run '{run}' is {status}; only a stopped run this studio started resumes.")
        argv = [a for a in started[0].argv if a != "--resume"] + ["--resume"]
        return {"id": run, "job": queue.submit("train", run, argv).public("")}

    @app.get("/api/runs/{run}/events")
    async def events(run: str, request: Request) -> StreamingResponse:
        known(run)
        snapshot = lambda: catalog.describe(settings.runs_dir, queue, run)
        stream = run_events(snapshot, settings.poll_s, request.is_disconnected)
        return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-store"})


def _action_routes(app: FastAPI, settings: StudioSettings, queue: JobQueue) -> None:
    from tuneforge.studio import actions

    actions.register(app, settings, queue)
