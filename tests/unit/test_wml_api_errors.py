"""The exception tree: messages, Retry-After, odd error bodies, the base URL check (no server: the TLS
handshakes are in tests/integration/test_wml_api_tls.py)."""

from __future__ import annotations

import email.utils

import pytest
import requests

from wml_api import (
    BadRequest,
    NotFound,
    Unavailable,
    WMLClient,
    WMLCredentials,
    WMLError,
    error_from_response,
)
from wml_api.errors import parse_retry_after


def response(status: int, body: bytes, headers: dict[str, str] | None = None) -> requests.Response:
    """A real `requests.Response` filled in by hand: what `error_from_response` receives from the session."""
    resp = requests.Response()
    resp.status_code = status
    resp._content = body
    resp.headers.update(headers or {})
    resp.reason = {404: "Not Found", 503: "Service Unavailable"}.get(status, "")
    return resp


def test_message_is_method_path_status_code_and_message_only() -> None:
    err = WMLError("boom.", method="GET", path="https://user:pw@h/v3/x?token=abc", status=400, code="bad")
    assert str(err) == "GET /v3/x: 400 bad: boom."
    assert str(WMLError("no answer", method="GET", path="/v3/x")) == "GET /v3/x: no answer"
    assert str(WMLError("plain")) == "plain"
    assert "abc" not in repr(err)
    assert "pw" not in repr(err)


@pytest.mark.parametrize(("body", "code", "message"), [
    (b'{"trace": "t", "errors": [{"code": "a", "message": "first"}, {"code": "b", "message": "second"}]}',
     "a", "first; second"),
    (b'{"code": "flat", "message": "older shape"}', "flat", "older shape"),
    (b'{"detail": [{"loc": ["body"], "msg": "field required"}]}', None, '[{"loc": ["body"]'),
    (b"", None, "Not Found"),
    (b"plain text\n  with   spaces", None, "plain text with spaces"),
])
def test_error_bodies_of_every_shape(body: bytes, code: str | None, message: str) -> None:
    err = error_from_response("DELETE", "/v3/d", response(404, body))
    assert isinstance(err, NotFound)
    assert err.code == code
    assert err.message.startswith(message)


def test_long_non_json_bodies_are_truncated() -> None:
    err = error_from_response("GET", "/v3/x", response(503, b"x" * 5000, {"Retry-After": "2"}))
    assert isinstance(err, Unavailable)
    assert len(err.message) == 300
    assert err.message.endswith("...")
    assert err.retry_after == 2.0  # a 503 may say when to come back, too


def test_other_4xx_are_bad_requests_and_408_is_transient() -> None:
    assert type(error_from_response("GET", "/x", response(418, b""))) is BadRequest
    assert error_from_response("GET", "/x", response(408, b"")).transient


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now) == 90.0
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now) == 0.0
    for bad in (None, "", "soon", "nan", "-inf"):
        assert parse_retry_after(bad, now) in (None, 0.0)
    assert parse_retry_after("nan", now) is None


@pytest.mark.parametrize("url", ["ftp://h", "https://user:pw@h", "h:80", "https://h/?q=1"])
def test_base_url_is_checked_up_front(url: str) -> None:
    with pytest.raises(ValueError, match="base URL") as err:
        WMLClient(url, WMLCredentials("u", "p"), "iid")
    assert "pw" not in str(err.value)
