"""Routes that act on a run beyond training: check settings, evaluate, export, chat.

Evaluate and export run `tuneforge eval/export` through the same job queue as training (one
device, one job at a time); check runs `data check --json` and `train --dry-run --json` at once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, HTTPException
from fastapi.responses import FileResponse, StreamingResponse

from tuneforge.studio import catalog, commands_argv, discovery
from tuneforge.studio.jobs import JobQueue
from tuneforge.studio.settings import StudioSettings

CHECK_TIMEOUT_S = 300


def register(app: FastAPI, settings: StudioSettings, queue: JobQueue) -> None:
    def finished(run: str) -> Path:
        if not discovery.RUN_NAME.match(run) or not (settings.runs_dir / run).is_dir():
            raise HTTPException(404, f"There is no run '{run}' in {settings.runs_dir}.")
        status, _ = catalog.run_state(run, settings.runs_dir / run, queue)
        if status != "finished":
            raise HTTPException(409, f"The run '{run}' is {status}; this needs a finished run.")
        return settings.runs_dir / run

    @app.post("/api/check")
    async def check(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        """The data report (with one example's trained tokens marked) and every setting with its source."""
        job_file = settings.jobs_dir / "check.yaml"
        argv = commands_argv.train_argv(settings, job_file, "check-run", body.get("settings") or {})
        config = argv[1:3]
        data, dry = await asyncio.gather(
            _json_command(settings, ["data", "check", *config, "--json"]),
            _json_command(settings, ["train", *config, "--dry-run", "--json"]),
        )
        return {"data": data, "settings": dry}

    @app.post("/api/runs/{run}/eval", status_code=201)
    def evaluate(run: str, body: dict[str, Any] = Body(default={})) -> dict[str, Any]:
        finished(run)
        limit = int(body.get("limit") or 20)
        return {"id": run, "job": queue.submit("eval", run, commands_argv.eval_argv(settings, run, limit)).public("")}

    @app.get("/api/runs/{run}/eval")
    def eval_report(run: str) -> dict[str, Any]:
        report = discovery.read_json(finished(run) / "eval" / "metrics.json")
        if report is None:
            raise HTTPException(404, f"The run '{run}' has no evaluation yet.")
        return dict(report)

    @app.post("/api/runs/{run}/export", status_code=201)
    def export(run: str, body: dict[str, Any] = Body(default={})) -> dict[str, Any]:
        finished(run)
        fmt, quant = str(body.get("format") or "gguf"), body.get("quant")
        quant = None if fmt == "hf" else str(quant or "f16")
        job = queue.submit("export", run, commands_argv.export_argv(settings, run, fmt, quant))
        return {"id": run, "job": job.public("")}

    @app.get("/api/exports")
    def exports() -> dict[str, Any]:
        return {"exports": [_export_view(folder) for folder in _export_folders(settings)]}

    @app.get("/api/exports/{name}/{file}")
    def download(name: str, file: str) -> FileResponse:
        folders = {folder.name: folder for folder in _export_folders(settings)}
        if name not in folders or file not in {p.name for p in folders[name].iterdir() if p.is_file()}:
            raise HTTPException(404, f"There is no file '{file}' in the export '{name}'.")
        return FileResponse(folders[name] / file, filename=file, media_type="application/octet-stream")

    @app.post("/api/runs/{run}/chat")
    def chat(run: str, body: dict[str, Any] = Body(...)) -> StreamingResponse:
        folder = finished(run)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPException(400, "'messages' must be a list of {role, content} objects.")
        model, tokens = str(body.get("model") or "tuned"), int(body.get("max_new_tokens") or 128)
        engines = app.state.chat
        engines.engine(folder)  # load (or fail with its one-paragraph error) before the stream starts
        stream = engines.stream(folder, messages, model, tokens)
        return StreamingResponse(stream, media_type="text/plain; charset=utf-8")


def _export_folders(settings: StudioSettings) -> list[Path]:
    if not settings.exports.is_dir():
        return []
    return sorted((p for p in settings.exports.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.stat().st_mtime, reverse=True)  # fmt: skip


def _export_view(folder: Path) -> dict[str, Any]:
    from tuneforge.export.ollama import create_command

    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    gguf = next((name for name in files if name.endswith(".gguf")), None)
    view: dict[str, Any] = {"name": folder.name, "path": str(folder), "files": files, "ollama": None}
    if gguf and "Modelfile" in files:
        model_name = gguf[: -len(".gguf")].rsplit("-", 1)[0]
        view["ollama"] = " ".join(create_command(model_name, folder))
    return view


async def _json_command(settings: StudioSettings, argv: list[str]) -> dict[str, Any]:
    """Runs a `--json` command; its one-paragraph error becomes {"error": ...}."""
    from tuneforge.studio.jobs import error_text

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([*settings.tuneforge, *argv], capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)

    done = await asyncio.to_thread(run)
    if done.returncode != 0:
        return {"error": error_text(done.stdout + done.stderr)}
    try:
        return dict(json.loads(done.stdout[done.stdout.index("{") :]))
    except ValueError:
        return {"error": error_text(done.stdout + done.stderr)}
