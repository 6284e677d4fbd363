"""Checks that run before any route: the API key, and the size of the request body.

Written as plain ASGI middleware for two reasons. Starlette's BaseHTTPMiddleware gets in the
way of streaming and disconnect detection. FastAPI's own `max_body_size` answers in plain
text, but OpenAI clients need the JSON error shape to show the message.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.serving.errors import OpenAIError

# Open without a key: the health probe, and the chat page with its files (it asks for the key itself).
PUBLIC_PATHS = ("/health", "/", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)


class Guards:
    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._check_key(scope["path"], headers) or self._check_length(headers)
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _check_key(self, path: str, headers: Headers) -> OpenAIError | None:
        if self.api_key is None or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if not given or scheme.lower() != "bearer":
            return OpenAIError(
                401, "You didn't provide an API key. Send it in the header 'Authorization: Bearer KEY' "
                "(the openai SDK does this with api_key=...).", code="invalid_api_key",
            )  # fmt: skip
        # compare_digest: the time taken must not reveal how many leading characters matched
        if not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
            return OpenAIError(401, "Incorrect API key provided.", code="invalid_api_key")
        return None

    def _check_length(self, headers: Headers) -> OpenAIError | None:
        declared = headers.get("content-length")
        if declared is None:
            return None
        if not declared.isdigit():
            return OpenAIError(400, f"The Content-Length header '{declared[:20]}' is not a number.")
        if int(declared) > self.max_body_bytes:
            return _too_large(int(declared), self.max_body_bytes)
        return None

    def _counting(self, receive: Receive) -> Receive:
        """Bodies sent in chunks have no Content-Length: count them as they arrive."""
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    # FastAPI re-raises an HTTPException met while reading the body; errors.py reshapes it
                    raise HTTPException(413, _too_large(seen, self.max_body_bytes).message)
            return message

        return wrapped


def _too_large(size: int, limit: int) -> OpenAIError:
    return OpenAIError(
        413, f"The request body is {size} bytes, over this server's limit of {limit} bytes. Send a shorter prompt.",
        code="request_too_large",
    )  # fmt: skip
