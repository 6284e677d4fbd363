"""Every failure leaves the server in the OpenAI error shape, so SDKs show the message to the user.

The shape is `{"error": {"message", "type", "param", "code"}}`. The `openai` package reads
`message` into its exception text, and chat front-ends print it. A bare FastAPI
`{"detail": ...}` or an HTML 500 page shows up there as "unknown error".
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger("tuneforge.serve")

_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_error", 503: "server_error"}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type"}


class OpenAIError(Exception):
    """A request the server refuses: an HTTP status plus the four OpenAI error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OpenAIError, _openai_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _openai_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenAIError)
    return exc.response()


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return explain_validation(list(exc.errors())).response()


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404/405/413 (unknown path, wrong method, body too big), reshaped."""
    assert isinstance(exc, HTTPException)
    message = {
        404: f"Unknown path {request.url.path}. The API lives under /v1 (models, chat/completions, completions).",
        405: f"{request.method} is not allowed on {request.url.path}.",
    }.get(exc.status_code, str(exc.detail))
    return OpenAIError(exc.status_code, message, code=_HTTP_CODES.get(exc.status_code)).response()


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug or an out-of-memory: log the traceback, answer in the shape clients understand."""
    log.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
    return server_error(exc).response()


def server_error(exc: BaseException) -> OpenAIError:
    from tuneforge.machine.memory import is_out_of_memory

    if is_out_of_memory(exc):
        return OpenAIError(503, "The server ran out of memory for this request. Lower max_tokens or retry later.")
    return OpenAIError(500, f"The server failed on this request ({type(exc).__name__}); its log has the details.")


def explain_validation(errors: list[dict[str, Any]]) -> OpenAIError:
    """pydantic's first complaint as one sentence that names the field, the value and what fits."""
    err = errors[0]
    loc = [str(part) for part in err.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    kind = err.get("type", "")
    if kind == "json_invalid":
        detail = err.get("ctx", {}).get("error", "")
        return OpenAIError(
            400,
            f"The request body is not valid JSON ({detail} at character {loc[0] if loc else '?'}).",
            code="invalid_json",
        )
    if kind == "missing" and not loc:
        return OpenAIError(400, "The request needs a JSON body.", code="invalid_json")
    if kind == "model_attributes_type" and not loc:
        return OpenAIError(
            400,
            "The request body must be a JSON object, sent with Content-Type: application/json.",
            code="invalid_json",
        )
    if kind == "extra_forbidden":
        return OpenAIError(
            400, f"Unrecognized request argument supplied: {param}. This server does not support it.", param=param
        )
    if kind == "missing":
        return OpenAIError(
            400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )
    value = err.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    reason = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return OpenAIError(400, f"Invalid value for '{param}': {shown[:80]}. {reason}.", param=param, code="invalid_value")
