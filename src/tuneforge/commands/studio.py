"""`tuneforge studio`: check the exposure rule, bind the port, then serve the studio page until Ctrl-C.

The port is bound before anything else loads, so "port in use" is the first and fastest error.
Runs keep training when the studio stops: they are separate processes (studio/jobs.py).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from tuneforge.errors import UserError

TOKEN_ENV = "TUNEFORGE_STUDIO_TOKEN"


def run_studio(
    host: str, port: int, runs_dir: Path, data_dir: Path | None, token: str | None, open_browser: bool
) -> None:
    import uvicorn

    from tuneforge.commands.serve import bind, is_loopback
    from tuneforge.machine.threads import prefer_passive_threads
    from tuneforge.studio.app import create_app
    from tuneforge.studio.settings import StudioSettings

    token = token or os.environ.get(TOKEN_ENV)
    if not is_loopback(host) and not token:
        raise UserError(
            f"--host {host} makes the studio reachable from other machines, and it starts processes. Set a token "
            f"with --token or the environment variable {TOKEN_ENV}, or keep the default --host 127.0.0.1."
        )
    prefer_passive_threads()  # before torch loads: OpenMP reads it once
    runs_dir = runs_dir.expanduser().resolve()
    data_dir = (data_dir or runs_dir / ".studio").expanduser().resolve()
    sock = bind(host, port)
    port = sock.getsockname()[1]  # --port 0 takes a free one; the Host check needs the real one
    settings = StudioSettings(runs_dir=runs_dir, data_dir=data_dir, host=host, port=port)
    if token:
        settings = replace(settings, token=token)
    address = f"http://{host}:{port}/" + (f"?token={settings.token}" if not is_loopback(host) else "")
    print(f"tuneforge studio: {address}  (runs in {runs_dir}; Ctrl-C stops the studio, not the runs)", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(address)
    config = uvicorn.Config(create_app(settings), log_level="warning", timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
