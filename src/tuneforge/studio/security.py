"""The guard in front of every route: a local page that starts processes is a target.

- Host must name the studio (127.0.0.1:PORT, localhost:PORT): a DNS-rebinding page on
  evil.example resolving to 127.0.0.1 sends `Host: evil.example`, and gets 403.
- Origin, when the browser sends one, must be the studio's own: another page open in the same
  browser can't drive it (its fetches carry its own Origin).
- Every state-changing request (POST, PUT, DELETE) carries the per-launch token in the
  `X-Studio-Token` header. Only the studio's own page knows it: it is written into the page,
  which other origins cannot read.
- Bound beyond loopback, every request needs the token (header, or the cookie the page gets
  from `/?token=...`), as `tuneforge serve` needs its API key.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from tuneforge.studio.settings import StudioSettings, is_loopback

TOKEN_HEADER = "x-studio-token"
TOKEN_COOKIE = "tuneforge_studio"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def refuse(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=403)


def check_request(request: Request, settings: StudioSettings) -> str | None:
    """Why this request is refused, or None when it may pass."""
    host = request.headers.get("host", "")
    if host not in settings.own_hosts():
        return f"Host '{host}' is not this studio's; open http://{settings.host}:{settings.port}/ instead."
    origin = request.headers.get("origin")
    if origin is not None and origin not in settings.own_origins():
        return f"Requests from the page at '{origin}' may not use this studio."
    token = request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE) or ""
    if request.method == "GET" and request.url.path == "/" and request.query_params.get("token"):
        token = request.query_params["token"]
    if not secrets.compare_digest(token.encode(), settings.token.encode()):
        if request.method not in SAFE_METHODS:
            return "This request changes something and needs the studio's token (the X-Studio-Token header)."
        if not is_loopback(settings.host):
            return "This studio listens beyond this machine: open the address with ?token=... that it printed."
    return None


def guard(
    settings: StudioSettings,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """An HTTP middleware that refuses with 403 and says why."""

    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        reason = check_request(request, settings)
        if reason:
            return refuse(reason)
        response = await call_next(request)
        response.headers.setdefault("X-Frame-Options", "DENY")  # no clickjacking of the Start button
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return middleware
