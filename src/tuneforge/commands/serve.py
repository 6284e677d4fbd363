"""`tuneforge serve`: check the settings, bind the port, load the model, then serve until Ctrl-C.

Read `run_serve` top to bottom. Every check that can fail on bad input runs before the model
loads: the exposure rule, the adapter folders and the port. A mistake then costs a second,
not a model load.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.serving.limits import Limits


def run_serve(
    adapters: list[str],
    model: str | None = None,
    cli_values: dict[str, Any] | None = None,
    config_file: Path | None = None,
    insecure_no_key: bool = False,
    checksums: bool = True,
) -> None:
    from tuneforge.config_resolve import resolve_config
    from tuneforge.serving.loading import base_model_name, check_precision, load_engine, parse_adapter_specs

    serve = resolve_config(cli_values or {}, config_file, use_profile=False).config.serve
    check_exposure(serve.host, serve.api_key, insecure_no_key)
    check_precision(serve.precision, serve.compile, serve.max_batch)
    specs = parse_adapter_specs(adapters or ([] if model else ["results"]), checksums)  # all whole, or none served
    base = base_model_name(specs, model)
    sock = bind(serve.host, serve.port)
    limits = Limits(max_tokens_cap=serve.max_tokens_cap, queue_size=serve.queue_size, max_batch=serve.max_batch)
    try:
        engine = load_engine(specs, base, precision=serve.precision, compile_decode=serve.compile)
        _serve(engine, sock, serve.api_key, limits)
    finally:
        sock.close()


def check_exposure(host: str, api_key: str | None, insecure_no_key: bool) -> None:
    """Anyone on the network could use a server bound beyond this machine: that needs a key."""
    if is_loopback(host) or api_key or insecure_no_key:
        return
    raise UserError(
        f"--host {host} makes the server reachable from other machines, but no API key is set. "
        "Set one with the environment variable TUNEFORGE_API_KEY (or --api-key), keep the default "
        "--host 127.0.0.1, or add --insecure-no-key if this network is trusted."
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def bind(host: str, port: int) -> socket.socket:
    """Take the port now, so 'address in use' is a clear error before the model loads."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UserError(
            f"--host {host} is not an address of this machine ({exc.strerror}). Use 127.0.0.1 or 0.0.0.0."
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(
            f"Can't listen on {host}:{port}: {exc.strerror}. Another program (or another tuneforge serve) may "
            "use this port: pick a free one with --port."
        ) from None
    sock.listen(128)
    return sock


def _serve(engine: Any, sock: socket.socket, api_key: str | None, limits: Limits) -> None:
    import uvicorn

    from tuneforge.serving.app import create_app

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    models = ", ".join(engine.names)
    print(f"Serving {models} at http://{shown}:{port}/v1 (OpenAI API); chat page at http://{shown}:{port}/", flush=True)
    print("API key required." if api_key else "No API key: anyone who can reach this address can use it.", flush=True)
    app = create_app(engine, api_key=api_key, limits=limits)
    config = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=5, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])
