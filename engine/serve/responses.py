"""How answers and errors are written: vectors as JSON or base64, and one error shape for every failure.

Shared by the routes and the middleware (which answers 413 before any route runs).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from numpy.typing import NDArray
from starlette.exceptions import HTTPException

from bertonnx.errors import InputError
from bertonnx.serve.errors import Overloaded, TooLarge

USER_ERRORS = (InputError,)
ERROR_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "method_not_allowed",
    413: "request_too_large",
    422: "invalid_request_error",
    503: "overloaded_error",
}


def encode(vectors: NDArray[np.float32], encoding: str) -> Any:
    """Floats as JSON numbers, or base64 of little-endian float32 as the OpenAI client decodes it."""
    if encoding == "base64":
        return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")
    return vectors.tolist()


def render(head: dict[str, Any], items: Iterator[dict[str, Any]]) -> Response:
    """head plus a "data" list, rendered one item at a time.

    Only one item's floats are ever Python objects at once, so a large /embed/words
    answer costs its JSON text in memory, not several times that.
    """
    data = ",".join(json.dumps(item, separators=(",", ":")) for item in items)
    text = json.dumps(head, separators=(",", ":"))[:-1] + ',"data":[' + data + "]}"
    return Response(text, media_type="application/json")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error body has one shape, OpenAI's: {"error": {"message", "type"}}."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    """Map every known error to its status, and anything else to a 500 that leaks nothing."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        status = 400 if any(p.get("type") == "json_invalid" for p in problems) else 422
        return error_response(status, describe(problems, error.body))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), error.headers)

    async def user_error(request: Request, error: Exception) -> JSONResponse:
        return error_response(400, str(error))

    for kind in USER_ERRORS:
        app.add_exception_handler(kind, user_error)

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, error: TooLarge) -> JSONResponse:
        return error_response(413, str(error))

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, error: Overloaded) -> JSONResponse:
        return error_response(503, str(error), {"Retry-After": str(error.retry_after)})

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        # Starlette re-raises after this response is sent, so uvicorn logs the traceback.
        return error_response(500, "internal server error; see the server log")


def describe(problems: Sequence[Any], body: Any = None) -> str:
    """Pydantic's errors as one line a person can act on: where, and what was wrong."""
    parts = []
    for problem in problems[:3]:
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
        if problem.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({_json_error(problem, body)})")
        elif not where and isinstance(problem.get("input"), bytes | str):
            parts.append("the body must be a JSON object, sent with Content-Type: application/json")
        else:
            # A validator's own ValueError reads better without pydantic's "Value error, " prefix.
            message = problem.get("ctx", {}).get("error") if problem.get("type") == "value_error" else None
            parts.append(f"{where or 'body'}: {message or problem.get('msg', 'invalid')}")
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(dict.fromkeys(parts)) + more


def _json_error(problem: Any, body: Any) -> str:
    """The decoder's message with its line, column and character, as json.JSONDecodeError words it.

    FastAPI keeps only the message ("Unterminated string starting at") and puts the
    character offset in `loc`; the position is rebuilt from it and the body's text.
    """
    message = str(problem.get("ctx", {}).get("error", "decode error"))
    position = problem.get("loc", ())[-1:]
    if not isinstance(body, str) or not position or not isinstance(position[0], int):
        return message
    return str(json.JSONDecodeError(message, body, min(position[0], len(body))))
