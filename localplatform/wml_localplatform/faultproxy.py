"""A fault-injection HTTP proxy on 127.0.0.1, put between the operator and the WML service.

Why not toxiproxy: it works on TCP streams, so it can cut, slow or reset a connection but cannot answer a
request with a 503 or a 429 carrying Retry-After, which are the faults the operator's HTTP client must
tell apart. This proxy is a real HTTP server on a real port; the operator reaches it through the `url` of
its credentials Secret, exactly as it would reach the service, and nothing in the operator is patched.

Faults, set by the test while traffic flows:
- down() / up(): the port refuses connections (the listening socket is closed), then accepts again.
- fail(n, status): the next n requests get that status in the service's error shape, unforwarded.
- rate_limit(n, retry_after): the next n requests get 429 with a Retry-After header.
- slow(seconds, n): the next n requests (all, when n is None) wait that long before being forwarded; with
  method= only requests of that method count; with late=True they are forwarded at once and only the answer
  waits (the service has acted, the client may have given up: a response lost to a timeout).
Every request is recorded (time, method, path, status) for the test to count; every response body the
operator sees goes to `log`, so the suite's secret scanner reads what the service answered. Request
bodies are not logged: deployment creates carry Kafka passwords.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from wml_localplatform import process

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length"}


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    status: int  # what the operator got; 0 when the upstream could not be reached


@dataclass
class _Fault:
    remaining: int | None  # None: until cleared
    status: int = 0
    retry_after: float | None = None
    delay: float = 0.0
    method: str | None = None  # only requests of this method; None: any
    late: bool = False  # forward at once, answer after `delay`


class FaultProxy:
    def __init__(self, upstream: str, log: Path, port: int | None = None, upstream_timeout: float = 60.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self.upstream_timeout = upstream_timeout
        self.port = port or process.free_port()
        self.log = log
        self.seen: list[Seen] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self.up()
        return self

    def up(self) -> None:
        if self._server is not None:
            return
        self.log.parent.mkdir(parents=True, exist_ok=True)
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Closes the listening socket: new connections are refused until up()."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        # Kept-alive connections would go on being served: a service that is down answers nothing.
        with self._lock:
            connections, self._connections = set(self._connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    stop = down

    # -- faults ---------------------------------------------------------------------------------------------
    def fail(self, n: int, status: int = 503) -> None:
        self._add(_Fault(n, status=status))

    def rate_limit(self, n: int, retry_after: float = 2.0) -> None:
        self._add(_Fault(n, status=429, retry_after=retry_after))

    def slow(self, seconds: float, n: int | None = None, *, method: str | None = None, late: bool = False) -> None:
        self._add(_Fault(n, delay=seconds, method=method, late=late))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, method: str) -> _Fault | None:
        with self._lock:
            fault = next((f for f in self._faults if f.method is None or f.method == method), None)
            if fault is not None and fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            return fault

    # -- what happened --------------------------------------------------------------------------------------
    def requests(self, since: float = 0.0, method: str | None = None, path: str | None = None) -> list[Seen]:
        """Requests seen after `since` (monotonic), optionally of one method and with `path` in their path."""
        with self._lock:
            seen = list(self.seen)
        return [s for s in seen if s.at >= since and (method is None or s.method == method)
                and (path is None or path in s.path)]

    def _record(self, seen: Seen, body: bytes) -> None:
        with self._lock:
            self.seen.append(seen)
            with self.log.open("ab") as out:
                out.write(f"{seen.method} {seen.path} {seen.status} ".encode() + body[:4000] + b"\n")


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with proxy._lock:
                proxy._connections.add(self.connection)

        def finish(self) -> None:
            with proxy._lock:
                proxy._connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def log_message(self, format: str, *args: object) -> None:
            pass  # requests are recorded in proxy.seen instead

        def _relay(self) -> None:
            arrived = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fault = proxy._take(self.command)
            if fault and fault.delay and not fault.late:
                time.sleep(fault.delay)
            if fault and fault.status:
                self._answer_fault(arrived, fault)
                return
            # Host is kept, as a transparent reverse proxy does: the service builds absolute links (the `next`
            # page of a list) from it, and links to its own port would send the client around the proxy.
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=proxy.upstream_timeout)
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
            except OSError as exc:
                self._send(502, {"Content-Type": "application/json"}, _error("upstream_unreachable", str(exc)))
                proxy._record(Seen(arrived, self.command, self.path, 0), b"")
                return
            finally:
                conn.close()
            out = {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP}
            if fault and fault.late:
                time.sleep(fault.delay)
            self._send(resp.status, out, payload)
            proxy._record(Seen(arrived, self.command, self.path, resp.status), payload)

        def _answer_fault(self, arrived: float, fault: _Fault) -> None:
            headers = {"Content-Type": "application/json"}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            code = "rate_limited" if fault.status == 429 else "injected_fault"
            payload = _error(code, f"fault injected by the test proxy ({fault.status})")
            self._send(fault.status, headers, payload)
            proxy._record(Seen(arrived, self.command, self.path, fault.status), payload)

        def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            with contextlib.suppress(OSError):  # down() cut the connection meanwhile
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

    return Handler


def _error(code: str, message: str) -> bytes:
    return json.dumps({"trace": uuid.uuid4().hex, "errors": [{"code": code, "message": message}]}).encode()
