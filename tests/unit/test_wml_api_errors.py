"""The exception tree: messages, Retry-After, odd error bodies, and TLS failures against a real local TLS server."""

from __future__ import annotations

import datetime
import email.utils
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wml_api import (
    TOKEN_CACHE,
    BadRequest,
    NotFound,
    TLSError,
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


# --- TLS: a real handshake on loopback ------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wml-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _TokenOnly(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"token": "opaque"}' if self.path == "/v3/identity/token" else b'{"errors": []}'
        self.send_response(200 if self.path == "/v3/identity/token" else 403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenOnly)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    TOKEN_CACHE.clear()
    yield f"https://127.0.0.1:{server.server_port}", cert
    server.shutdown()
    server.server_close()
    TOKEN_CACHE.clear()


def test_untrusted_certificate_is_a_tls_error_that_needs_a_fix(tls_server: tuple[str, Path]) -> None:
    url, _ = tls_server
    with WMLClient(url, WMLCredentials("u", "p"), "iid") as client, pytest.raises(TLSError) as err:
        client.get_instance()
    assert not err.value.transient
    assert "certificate" in str(err.value)
    assert str(err.value).startswith("GET /v3/identity/token: TLS with")


def test_ca_bundle_makes_the_same_server_trusted(tls_server: tuple[str, Path]) -> None:
    url, cert = tls_server
    with WMLClient(url, WMLCredentials("u", "p"), "iid", ca_bundle=str(cert)) as client, \
            pytest.raises(WMLError) as err:
        client.get_instance()
    # The handshake and the token worked; the instance call got the server's 403, not a TLS error.
    assert err.value.status == 403


@pytest.mark.parametrize("url", ["ftp://h", "https://user:pw@h", "h:80", "https://h/?q=1"])
def test_base_url_is_checked_up_front(url: str) -> None:
    with pytest.raises(ValueError, match="base URL") as err:
        WMLClient(url, WMLCredentials("u", "p"), "iid")
    assert "pw" not in str(err.value)
