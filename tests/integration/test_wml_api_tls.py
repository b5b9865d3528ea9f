"""WMLClient's TLS failures against a real TLS server on 127.0.0.1: an untrusted certificate is a TLSError that
needs a fix, and the same server is trusted with its CA bundle."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wml_api import TOKEN_CACHE, TLSError, WMLClient, WMLCredentials, WMLError

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
