"""WMLClient against a scripted HTTP server on 127.0.0.1 (a real socket, no mocked `requests`): an integration
test, since it binds and serves."""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from wml_api import (
    TOKEN_CACHE,
    BadRequest,
    Conflict,
    DeploymentCreate,
    Forbidden,
    InvalidResponse,
    NotFound,
    RateLimited,
    SparkServiceInstance,
    Unauthorized,
    Unavailable,
    WMLClient,
    WMLCredentials,
    WMLError,
    auth,
)
from wml_api.errors import HeldBack

USER, PASSWORD = "wml-user", "pa55-w0rd-not-for-logs"
CREDS = WMLCredentials(USER, PASSWORD)
IID, MID, DID = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222", "did-1"
INSTANCE_PATH = f"/v3/wml_instances/{IID}"
DEPLOYMENT_PATH = f"{INSTANCE_PATH}/published_models/{MID}/deployments/{DID}"
Reply = tuple[int, dict[str, str], Any]  # body: dict/list as JSON, str as raw text, None for none


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


def deployment(guid: str, status: str = "RUNNING") -> dict[str, Any]:
    return {"metadata": {"guid": guid, "url": f"http://x{INSTANCE_PATH}/published_models/{MID}/deployments/{guid}"},
            "entity": {"type": "stream", "name": f"d-{guid}", "status": status}}


def wml_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return status, headers or {}, {"trace": "t-1", "errors": [{"code": code, "message": message}]}


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is what some tests do on purpose


class FakeWML:
    """Issues JWT-shaped tokens by basic auth and answers scripted routes for callers with a valid bearer."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.valid: set[str] = set()
        self.ttl = 8 * 3600.0
        self.routes: dict[tuple[str, str], Callable[[Seen], Reply]] = {
            ("GET", "/v3/identity/token"): self.token_by_basic_auth,
        }
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = Seen(self.command, url.path, dict(parse_qsl(url.query)),
                            {k.lower(): v for k, v in self.headers.items()}, json.loads(raw) if raw else None)
                fake.seen.append(seen)
                status, headers, body = fake.dispatch(seen)
                data = (body if isinstance(body, str) else json.dumps(body)).encode() if body is not None else b""
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = handle_one

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def on(self, method: str, path: str, reply: Reply | Callable[[Seen], Reply]) -> None:
        self.routes[(method, path)] = reply if callable(reply) else (lambda _seen: reply)

    def dispatch(self, seen: Seen) -> Reply:
        route = self.routes.get((seen.method, seen.path))
        if route is None:
            return wml_error(404, "not_found", f"Resource {seen.path} not found.")
        if "/identity/" not in seen.path and seen.headers.get("authorization", "")[7:] not in self.valid:
            return wml_error(401, "invalid_authorization_token", "Token is invalid.")
        return route(seen)

    def issue(self) -> str:
        now = time.time()
        claims = {"instanceId": IID, "userId": USER, "iss": "fake", "iat": now, "exp": now + self.ttl,
                  "n": len(self.valid)}
        token = ".".join(base64.urlsafe_b64encode(json.dumps(p).encode()).decode().rstrip("=")
                         for p in ({"alg": "none"}, claims)) + ".c2ln"
        self.valid.add(token)
        return token

    def token_by_basic_auth(self, seen: Seen) -> Reply:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if seen.headers.get("authorization") != expected:
            return wml_error(401, "invalid_credentials", "Bad credentials.")
        return 200, {}, {"token": self.issue()}

    def calls(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if (s.method, s.path) == (method, path)]


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterator[None]:
    TOKEN_CACHE.clear()
    yield
    TOKEN_CACHE.clear()


@pytest.fixture
def wml() -> Iterator[FakeWML]:
    fake = FakeWML()
    fake.thread.start()
    fake.on("GET", INSTANCE_PATH, (200, {}, {"metadata": {"guid": IID}, "entity": {"status": "Active", "x": 1}}))
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def client(wml: FakeWML) -> Iterator[WMLClient]:
    with WMLClient(wml.url, CREDS, IID, read_timeout=5) as c:
        yield c


def spark() -> SparkServiceInstance:
    return SparkServiceInstance.model_validate({"credentials": {
        "tenant_id": "t", "tenant_id_full": "tf", "cluster_master_url": "https://spark", "instance_id": "i",
        "tenant_secret": "spark-secret", "plan": "p"}})


def test_token_by_basic_auth_then_bearer(wml: FakeWML, client: WMLClient) -> None:
    instance = client.get_instance()
    assert instance.id == IID
    assert instance.entity.status == "Active"
    token_call, call = wml.seen
    assert (token_call.method, token_call.path) == ("GET", "/v3/identity/token")
    assert token_call.headers["authorization"].startswith("Basic ")
    assert call.headers["authorization"] == "Bearer " + next(iter(wml.valid))
    assert call.headers["user-agent"] == "wml-stream-operator"


def test_a_netrc_entry_for_the_host_neither_replaces_the_token_nor_is_sent(
        wml: FakeWML, client: WMLClient, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # requests, left to itself, puts a ~/.netrc entry for the host in place of the request's Authorization.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1\nlogin someone-else\npassword netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert client.get_instance().id == IID
    token_call, call = wml.seen
    assert token_call.headers["authorization"] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert call.headers["authorization"] == "Bearer " + next(iter(wml.valid))


def test_token_falls_back_to_v2_on_404(wml: FakeWML, client: WMLClient) -> None:
    del wml.routes[("GET", "/v3/identity/token")]
    wml.on("GET", "/v2/identity/token", wml.token_by_basic_auth)
    client.get_instance()
    assert [s.path for s in wml.seen] == ["/v3/identity/token", "/v2/identity/token", INSTANCE_PATH]


def test_bad_credentials_raise_unauthorized_without_the_password(wml: FakeWML) -> None:
    with WMLClient(wml.url, WMLCredentials(USER, "wrong-password"), IID) as c, pytest.raises(Unauthorized) as err:
        c.get_instance()
    assert str(err.value) == "GET /v3/identity/token: 401 invalid_credentials: Bad credentials."
    assert "wrong-password" not in repr(err.value)


def test_one_token_for_many_clients_of_the_same_credentials(wml: FakeWML) -> None:
    for _ in range(3):
        with WMLClient(wml.url + "/", CREDS, IID) as c:
            c.get_instance()
    assert len(wml.calls("GET", "/v3/identity/token")) == 1
    with WMLClient(wml.url, WMLCredentials(USER + "2", PASSWORD), IID) as other, pytest.raises(Unauthorized):
        other.get_instance()  # other credentials: other cache entry, so the server is asked (and refuses)
    assert len(wml.calls("GET", "/v3/identity/token")) == 2


def test_refresh_by_put_before_exp(wml: FakeWML, client: WMLClient, monkeypatch: pytest.MonkeyPatch) -> None:
    wml.ttl = 60
    wml.on("PUT", "/v3/identity/token", lambda seen: (200, {}, {"token": wml.issue()}))
    client.get_instance()
    first = wml.seen[-1].headers["authorization"][7:]
    client.get_instance()  # 60 s lifetime: refreshed only within its last 6 s
    assert not wml.calls("PUT", "/v3/identity/token")
    monkeypatch.setattr(auth, "_now", lambda: time.time() + 55)
    client.get_instance()
    (put,) = wml.calls("PUT", "/v3/identity/token")
    assert put.body == {"token": first}
    assert wml.seen[-1].headers["authorization"] not in ("Bearer " + first, "")
    assert len(wml.calls("GET", "/v3/identity/token")) == 1


def test_refused_refresh_falls_back_to_basic_auth(wml: FakeWML, client: WMLClient,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    wml.on("PUT", "/v3/identity/token", wml_error(401, "expired_authorization_token", "Too old."))
    client.get_instance()
    monkeypatch.setattr(auth, "_now", lambda: time.time() + 8 * 3600 - 60)
    client.get_instance()
    assert [s.method for s in wml.calls("GET", "/v3/identity/token")] == ["GET", "GET"]
    assert len(wml.calls("PUT", "/v3/identity/token")) == 1


def test_401_gets_one_retry_with_a_fresh_token(wml: FakeWML, client: WMLClient) -> None:
    client.get_instance()
    wml.valid.clear()  # the server forgets every token it issued (a restart, a key rotation)
    client.get_instance()
    calls = wml.calls("GET", INSTANCE_PATH)
    assert len(calls) == 3
    assert calls[1].headers["authorization"] != calls[2].headers["authorization"]
    assert len(wml.calls("GET", "/v3/identity/token")) == 2


def test_a_second_401_raises_and_does_not_loop(wml: FakeWML, client: WMLClient) -> None:
    wml.on("GET", INSTANCE_PATH, wml_error(401, "expired_authorization_token", "Expired."))
    with pytest.raises(Unauthorized) as err:
        client.get_instance()
    assert len(wml.calls("GET", INSTANCE_PATH)) == 2
    assert err.value.code == "expired_authorization_token"
    assert not err.value.transient
    assert not any(t in str(err.value) for t in wml.valid)


def test_create_sends_body_and_spark_header(wml: FakeWML, client: WMLClient) -> None:
    path = f"{INSTANCE_PATH}/published_models/{MID}/deployments"
    wml.on("POST", path, (201, {"Location": "x"}, deployment(DID, "INITIALIZING")))
    body = DeploymentCreate.model_validate({
        "name": "n", "input": {"connection": {"kafka_brokers_sasl": "a:1,b:2", "password": "kafka-pw"},
                               "source": {"topic": "in"}},
        "output": {"connection": {"kafka_brokers_sasl": ["a:1"]}, "target": {"topic": "out"}}})
    created = client.create_deployment(MID, body, spark())
    assert created.id == DID
    assert created.status == "INITIALIZING"
    (post,) = wml.calls("POST", path)
    assert post.body["type"] == "stream"
    assert post.body["input"]["connection"]["kafka_brokers_sasl"] == ["a:1", "b:2"]
    assert post.body["input"]["connection"]["password"] == "kafka-pw"
    assert "description" not in post.body  # unset optionals are left out, not sent as null
    assert SparkServiceInstance.from_header(post.headers["x-spark-service-instance"]) == spark()


def test_patch_delete_get_and_filters(wml: FakeWML, client: WMLClient) -> None:
    wml.on("PATCH", DEPLOYMENT_PATH, (204, {}, None))
    wml.on("DELETE", DEPLOYMENT_PATH, (204, {}, None))
    wml.on("GET", DEPLOYMENT_PATH, (200, {}, deployment(DID, "STOPPED")))
    wml.on("GET", DEPLOYMENT_PATH.rsplit("/", 1)[0], (200, {}, {"count": 1, "resources": [deployment(DID)]}))
    client.set_deployment_status(MID, DID, "STOPPED")
    client.set_deployment_status(MID, DID, "RUNNING", spark())
    client.delete_deployment(MID, DID)
    assert client.get_deployment(MID, DID).status == "STOPPED"
    assert [d.id for d in client.list_deployments(MID, status="RUNNING", type="stream")] == [DID]
    stop, start = wml.calls("PATCH", DEPLOYMENT_PATH)
    assert stop.body == [{"op": "replace", "path": "/status", "value": "STOPPED"}]
    assert "x-spark-service-instance" not in stop.headers
    assert "x-spark-service-instance" in start.headers
    assert wml.seen[-1].query == {"status": "RUNNING", "type": "stream"}


def test_instance_deployments_follow_next_pages(wml: FakeWML, client: WMLClient) -> None:
    path = f"{INSTANCE_PATH}/deployments"

    def pages(seen: Seen) -> Reply:
        start = int(seen.query.get("start", 0))
        body: dict[str, Any] = {"count": 3, "limit": 1, "resources": [deployment(f"d{start}")]}
        if start == 0:
            body["next"] = {"url": f"{wml.url}{path}?start=1&limit=1"}  # absolute
        elif start == 1:
            body["next"] = {"url": f"{path}?start=2&limit=1"}  # rooted, relative to the base URL
        return 200, {}, body

    wml.on("GET", path, pages)
    assert [d.id for d in client.list_instance_deployments()] == ["d0", "d1", "d2"]
    assert [s.query.get("start") for s in wml.calls("GET", path)] == [None, "1", "2"]


@pytest.mark.parametrize("next_url", ["/v3/again", "http://evil.example/steal"])
def test_paging_refuses_loops_and_other_hosts(wml: FakeWML, client: WMLClient, next_url: str) -> None:
    wml.on("GET", f"{INSTANCE_PATH}/deployments", (200, {}, {"count": 9, "resources": [], "next": {"url": next_url}}))
    wml.on("GET", "/v3/again", (200, {}, {"count": 9, "resources": [], "next": {"url": next_url}}))
    with pytest.raises(InvalidResponse):
        client.list_instance_deployments()
    assert len(wml.seen) <= 4  # token, first page, at most one repeat: no endless walk, no foreign call


@pytest.mark.parametrize(("reply", "cls", "text"), [
    (wml_error(400, "patch_multiple_ops", "Patch operation expects exactly one replace operation."), BadRequest,
     f"PATCH {DEPLOYMENT_PATH}: 400 patch_multiple_ops: Patch operation expects exactly one replace operation."),
    (wml_error(403, "forbidden", "No."), Forbidden, f"PATCH {DEPLOYMENT_PATH}: 403 forbidden: No."),
    (wml_error(404, "not_found", "Gone."), NotFound, f"PATCH {DEPLOYMENT_PATH}: 404 not_found: Gone."),
    (wml_error(409, "conflict", "Busy."), Conflict, f"PATCH {DEPLOYMENT_PATH}: 409 conflict: Busy."),
    (wml_error(422, "invalid", "Bad."), BadRequest, f"PATCH {DEPLOYMENT_PATH}: 422 invalid: Bad."),
    (wml_error(500, "internal", "Oops."), Unavailable, f"PATCH {DEPLOYMENT_PATH}: 500 internal: Oops."),
    ((502, {"Content-Type": "text/html"}, "<html>" + "bad gateway " * 100 + "</html>"), Unavailable,
     f"PATCH {DEPLOYMENT_PATH}: 502: <html>bad gateway bad gateway"),
])
def test_error_statuses_map_to_the_exception_tree(wml: FakeWML, client: WMLClient, reply: Reply,
                                                  cls: type[WMLError], text: str) -> None:
    wml.on("PATCH", DEPLOYMENT_PATH, reply)
    with pytest.raises(cls) as err:
        client.set_deployment_status(MID, DID, "RUNNING", spark())
    assert str(err.value).startswith(text)
    assert err.value.status == reply[0]
    assert err.value.transient == (reply[0] >= 500)
    assert len(err.value.message) <= 300
    for secret in (PASSWORD, "spark-secret", *wml.valid):
        assert secret not in str(err.value)
        assert secret not in repr(err.value)


@pytest.mark.parametrize("header", ["7", "HTTP-DATE"])
def test_rate_limit_carries_retry_after(wml: FakeWML, client: WMLClient, header: str) -> None:
    value = header if header != "HTTP-DATE" else email.utils.formatdate(time.time() + 120, usegmt=True)
    wml.on("GET", INSTANCE_PATH, wml_error(429, "rate_limit_exceeded", "Slow down.", {"Retry-After": value}))
    with pytest.raises(RateLimited) as err:
        client.get_instance()
    expected = 7.0 if header == "7" else 120.0
    assert err.value.retry_after is not None
    assert abs(err.value.retry_after - expected) < 3
    assert err.value.transient
    assert err.value.code == "rate_limit_exceeded"


def test_a_429_holds_back_every_call_of_the_client_until_retry_after(wml: FakeWML, client: WMLClient) -> None:
    wml.on("GET", INSTANCE_PATH, wml_error(429, "rate_limit_exceeded", "Slow down.", {"Retry-After": "30"}))
    with pytest.raises(RateLimited):
        client.get_instance()
    sent = len(wml.seen)
    with pytest.raises(HeldBack, match="not sent") as held:
        client.get_instance_deployment(DID)  # another call, another path: the server asked the client to wait
    assert len(wml.seen) == sent
    assert held.value.retry_after is not None
    assert 25 < held.value.retry_after <= 30


def test_a_429_without_retry_after_holds_nothing_back(wml: FakeWML, client: WMLClient) -> None:
    wml.on("GET", INSTANCE_PATH, wml_error(429, "rate_limit_exceeded", "Slow down."))
    for _ in range(2):
        with pytest.raises(RateLimited, match="Slow down"):
            client.get_instance()
    assert len(wml.calls("GET", INSTANCE_PATH)) == 2


def test_non_json_success_body_is_an_invalid_response(wml: FakeWML, client: WMLClient) -> None:
    wml.on("GET", INSTANCE_PATH, (200, {}, "<html>login page</html>"))
    with pytest.raises(InvalidResponse, match="not JSON"):
        client.get_instance()


def test_connection_refused_is_unavailable_and_observed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: nothing listens there
    observed: list[tuple[str, str, int | None, float]] = []
    with WMLClient(f"http://127.0.0.1:{port}", CREDS, IID, on_response=lambda *a: observed.append(a)) as c, \
            pytest.raises(Unavailable, match="Connection refused") as err:
        c.get_instance()
    assert err.value.transient
    assert err.value.status is None
    assert observed[0][:3] == ("GET", "/v3/identity/token", None)


def test_read_timeout_is_unavailable(wml: FakeWML) -> None:
    def slow(seen: Seen) -> Reply:
        time.sleep(1.0)
        return 200, {}, {}

    wml.on("GET", INSTANCE_PATH, slow)
    with WMLClient(wml.url, CREDS, IID, read_timeout=0.2) as c, pytest.raises(Unavailable, match=r"within 0\.2s"):
        c.get_instance()


def test_hook_sees_templates_and_logs_hold_no_secrets(wml: FakeWML, caplog: pytest.LogCaptureFixture) -> None:
    observed: list[tuple[str, str, int | None, float]] = []
    wml.on("GET", DEPLOYMENT_PATH, (200, {}, deployment(DID)))
    caplog.set_level(logging.DEBUG)
    with WMLClient(wml.url, CREDS, IID, on_response=lambda *a: observed.append(a)) as c:
        c.get_deployment(MID, DID)
        with pytest.raises(NotFound):
            c.get_deployment(MID, "a/../b")  # quoted into one segment, so it reaches no other route
    assert [o[:3] for o in observed] == [
        ("GET", "/v3/identity/token", 200),
        ("GET", "/v3/wml_instances/{instance_id}/published_models/{model_id}/deployments/{deployment_id}", 200),
        ("GET", "/v3/wml_instances/{instance_id}/published_models/{model_id}/deployments/{deployment_id}", 404)]
    assert wml.seen[-1].path.endswith("/deployments/a%2F..%2Fb")
    assert DEPLOYMENT_PATH in caplog.text
    for secret in (PASSWORD, *wml.valid):
        assert secret not in caplog.text
