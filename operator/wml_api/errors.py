"""One small exception tree at the HTTP boundary, so callers decide by type: retry, stall, or treat as done.

Messages carry the method, the path (never the query, never the host's userinfo), the HTTP status and the
WML error code and message. They never carry credentials, tokens, request bodies or headers: they end up in
Kubernetes conditions and events.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any
from urllib.parse import urlsplit

import requests

_BODY_SNIPPET = 300
_MESSAGE_LIMIT = 1000


class WMLError(Exception):
    """Anything that went wrong talking to a WML server."""

    # Transient errors are worth retrying with backoff; the others need someone to fix something.
    transient: bool = False

    def __init__(self, message: str, *, method: str = "", path: str = "", status: int | None = None,
                 code: str | None = None, trace: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.method = method
        self.path = safe_path(path)
        self.status = status
        self.code = code
        self.message = message
        self.trace = trace
        # Kept on the base class: a 503 may carry Retry-After as well as a 429.
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"{self.method} {self.path}".strip()
        head = " ".join(str(p) for p in (self.status, self.code) if p)
        text = f"{head}: {self.message}" if head else self.message
        return f"{where}: {text}" if where else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class BadRequest(WMLError):
    """The server rejected the request as sent (400, 422 and the 4xx codes without a class of their own)."""


class Unauthorized(WMLError):
    """401: bad credentials, or a token the server no longer accepts even after one fresh attempt."""


class Forbidden(WMLError):
    """403."""


class NotFound(WMLError):
    """404: the instance, model or deployment does not exist (a DELETE answering this counts as done)."""


class Conflict(WMLError):
    """409."""


class RateLimited(WMLError):
    """429: slow down; `retry_after` says for how long when the server said so."""

    transient = True


class HeldBack(RateLimited):
    """Not sent: the Retry-After of an earlier 429 to the same client still runs (`retry_after` is what is left)."""


class Unavailable(WMLError):
    """5xx, timeouts, refused or dropped connections: the server may well answer later."""

    transient = True


class TLSError(WMLError):
    """The TLS handshake failed (usually certificate verification): a CA bundle or URL needs fixing."""


class InvalidResponse(WMLError):
    """The server answered 2xx with a body that is not the v3 contract: wrong base URL or incompatible server."""


_BY_STATUS: dict[int, type[WMLError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 429: RateLimited,
    # 408 is the server giving up waiting for us: as transient as a timeout on our side.
    408: Unavailable,
}


def error_class(status: int) -> type[WMLError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return Unavailable if status >= 500 else BadRequest


def safe_path(path_or_url: str) -> str:
    """Only the path: a query string or a URL's userinfo must never reach a message."""
    if "://" in path_or_url or "?" in path_or_url or "#" in path_or_url:
        return urlsplit(path_or_url).path or "/"
    return path_or_url


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header, given as delta-seconds or as an HTTP-date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN or infinite
        return None
    return max(0.0, seconds)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _from_body(body: Any) -> tuple[str | None, str | None, str | None]:
    """(code, message, trace) from the v3 error shape, IBM's older flat shape, or a framework's `detail`."""
    if not isinstance(body, dict):
        return None, None, None
    trace = body.get("trace") if isinstance(body.get("trace"), str) else None
    items = body.get("errors")
    if isinstance(items, list):
        pairs = [(i.get("code"), i.get("message")) for i in items if isinstance(i, dict)]
        codes = [str(c) for c, _ in pairs if c]
        messages = [str(m) for _, m in pairs if m]
        if codes or messages:
            return (codes[0] if codes else None), ("; ".join(messages) or None), trace
    code = body.get("code") if isinstance(body.get("code"), str) else None
    for key in ("message", "detail", "error"):
        if isinstance(body.get(key), str):
            return code, body[key], trace
    if "detail" in body:
        return code, json.dumps(body["detail"])[:_BODY_SNIPPET], trace
    return code, None, trace


def error_from_response(method: str, path: str, response: requests.Response) -> WMLError:
    """The exception for a non-2xx response, its message taken from the WML error body when there is one."""
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    code, message, trace = _from_body(body)
    if message is None:
        raw = response.text if body is None else json.dumps(body)
        message = _clip(raw, _BODY_SNIPPET) if raw.strip() else (response.reason or f"HTTP {status}")
    cls = error_class(status)
    retry_after = parse_retry_after(response.headers.get("Retry-After")) if cls.transient else None
    return cls(_clip(message, _MESSAGE_LIMIT), method=method, path=path, status=status, code=code, trace=trace,
               retry_after=retry_after)
