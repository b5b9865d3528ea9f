"""Errors in the reference's shape: {"trace": "<id>", "errors": [{"code", "message"}]}."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wml_api.models import ErrorBody, ErrorItem, describe_errors

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_body(code: str, message: str, trace: str | None = None) -> ErrorBody:
    """The trace is what a user quotes to the operator of the service; the log line carries it too."""
    return ErrorBody(trace=trace or uuid.uuid4().hex, errors=[ErrorItem(code=code, message=message)])


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   trace: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, trace).model_dump(mode="json"), status_code=status,
                        headers=headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "missing_authorization_token",
               413: "request_too_large", 415: "unsupported_media_type"}


def install(app: FastAPI, before_invalid: Callable[[Request], None] | None = None) -> None:
    """The handlers that give every error the reference's shape. `before_invalid` runs before a 400 for an
    invalid request is sent, and may raise an APIError to send instead (the token check, see api.deps)."""

    def refused_first(request: Request) -> JSONResponse | None:
        if before_invalid is not None:
            try:
                before_invalid(request)
            except APIError as refused:
                return error_response(refused.status, refused.code, refused.message, refused.headers)
        return None

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if (refused := refused_first(request)) is not None:
            return refused
        # Where and pydantic's message only: never echo the offending input, it may hold a password.
        where = describe_errors(exc.errors(), limit=1, drop_first="body") if exc.errors() else "invalid request"
        return error_response(400, "invalid_request", f"Invalid request: {where}.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own 400 for a body it could not read at all ("There was an error parsing the body").
        if exc.status_code == 400 and (refused := refused_first(request)) is not None:
            return refused
        code = _HTTP_CODES.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal_error")
        message = str(exc.detail) if exc.status_code != 404 else f"Resource {request.url.path} not found."
        return error_response(exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        trace = uuid.uuid4().hex
        log.error("internal error on %s %s (trace %s): %s", request.method, request.url.path, trace,
                  type(exc).__name__)
        return error_response(500, "internal_error", "Internal server error.", trace=trace)
