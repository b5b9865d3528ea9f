"""Brute force on the token endpoints (issue 21): a limit per client address on by default, refused before the
password is checked, and every refusal counted in /metrics by reason, without a username."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from starlette.requests import Request

from wml_api.models import TokenRefreshRequest
from wml_server.__main__ import main
from wml_server.api import identity
from wml_server.api.deps import AppState, Auditor, limited_by_address
from wml_server.app import create_app
from wml_server.auth import hash_password
from wml_server.errors import APIError
from wml_server.logins import LoginMetrics
from wml_server.ratelimit import RateLimiter
from wml_server.settings import Settings

PASSWORD = "right-password-4d1c"
MakeApp = Callable[..., FastAPI]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[MakeApp]:
    made: list[FastAPI] = []
    key_file = tmp_path / "keys" / "wml.key"
    assert main(["generate-key", "--key-file", str(key_file)]) == 0

    def make(**settings: object) -> FastAPI:
        app = create_app(Settings(data_dir=tmp_path / "data", key_file=key_file, scoring_workers=0,
                                  run_streams=False, **settings))  # type: ignore[arg-type]
        made.append(app)
        wml(app).db.upsert_user("alice", hash_password(PASSWORD), "i")
        return app

    yield make
    for app in made:
        wml(app).db.close()
        wml(app).audit.close()


def wml(app: FastAPI) -> AppState:
    state: AppState = app.state.wml
    return state


def request(app: FastAPI, host: str = "192.0.2.7") -> Request:
    return Request({"type": "http", "app": app, "client": (host, 40000), "headers": [], "method": "GET",
                    "path": "/v3/identity/token"})


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def login(app: FastAPI, password: str, host: str = "192.0.2.7") -> str:
    """A token request as the router runs it: the address's limit first, then the route."""
    limited_by_address(request(app, host))
    return identity._token(wml(app), Auditor(wml(app).audit, host), basic("alice", password), "v3").token


def failed(app: FastAPI) -> dict[str, float]:
    counter = wml(app).logins.failed_total
    return {sample.labels["reason"]: sample.value for metric in counter.collect() for sample in metric.samples
            if sample.name.endswith("_total")}


def test_on_by_default_sixty_a_minute_per_address_then_429_for_the_right_password_too(make_app: MakeApp) -> None:
    app = make_app()
    limiter = wml(app).token_limiter
    assert limiter is not None
    assert limiter.per_minute == Settings.model_fields["token_rate_limit"].default == 60
    # The same limit on a clock that stands still: 60 scrypt checks take seconds, which would refill the bucket.
    wml(app).token_limiter = RateLimiter(60, lambda: 1000.0, what=limiter.what)
    for _ in range(60):
        with pytest.raises(APIError) as wrong:
            login(app, "guess")
        assert wrong.value.code == "invalid_credentials"
    with pytest.raises(APIError) as refused:
        login(app, PASSWORD)
    assert (refused.value.status, refused.value.code) == (429, "rate_limit_exceeded")
    assert refused.value.headers == {"Retry-After": "1"}
    assert "60 token requests per minute" in refused.value.message
    assert login(app, PASSWORD, host="192.0.2.8")  # another address has a bucket of its own
    assert failed(app) == {"bad_credentials": 60, "rate_limited": 1, "bad_request": 0, "bad_token": 0, "other": 0}
    assert wml(app).logins.issued_total._value.get() == 1


def test_zero_turns_it_off(make_app: MakeApp) -> None:
    app = make_app(token_rate_limit=0)
    assert wml(app).token_limiter is None
    for _ in range(100):
        limited_by_address(request(app))
    assert failed(app)["rate_limited"] == 0


def test_the_general_limit_still_counts_token_requests_by_address(make_app: MakeApp) -> None:
    app = make_app(token_rate_limit=0, rate_limit=2)
    limited_by_address(request(app))
    limited_by_address(request(app))
    with pytest.raises(APIError) as refused:
        limited_by_address(request(app))
    assert "2 requests per minute" in refused.value.message
    assert failed(app)["rate_limited"] == 1


def test_refusals_are_counted_by_reason_and_refreshes_as_issued(make_app: MakeApp) -> None:
    app = make_app()
    state = wml(app)
    audit = Auditor(state.audit, "192.0.2.7")
    for header in (None, "Bearer x", basic("nobody", "x")):
        with pytest.raises(APIError):
            identity._token(state, audit, header, "v3")
    token = identity._token(state, audit, basic("alice", PASSWORD), "v3").token
    assert identity.refresh_token(state, audit, TokenRefreshRequest(token=token)).token
    with pytest.raises(APIError):
        identity.refresh_token(state, audit, TokenRefreshRequest(token="not.a.jwt"))
    assert failed(app) == {"bad_credentials": 1, "rate_limited": 0, "bad_request": 2, "bad_token": 1, "other": 0}
    assert state.logins.issued_total._value.get() == 2


def test_the_counters_have_no_username_label_and_start_at_zero() -> None:
    registry = CollectorRegistry()
    metrics = LoginMetrics(registry)
    metrics.refused("invalid_credentials")
    metrics.refused("something new")
    text = generate_latest(registry).decode()
    assert 'wml_token_requests_failed_total{reason="bad_credentials"} 1.0' in text
    assert 'wml_token_requests_failed_total{reason="rate_limited"} 0.0' in text
    assert 'wml_token_requests_failed_total{reason="other"} 1.0' in text
    assert "wml_tokens_issued_total 0.0" in text
    labels = {name for family in registry.collect() for sample in family.samples for name in sample.labels}
    assert labels == {"reason"}


def test_x_forwarded_for_is_believed_only_from_trusted_proxies(make_app: MakeApp) -> None:
    """uvicorn itself runs with proxy_headers off (__main__); the middleware is there only when asked for."""
    def proxies(app: FastAPI) -> list[dict[str, object]]:
        return [m.kwargs for m in app.user_middleware if getattr(m.cls, "__name__", "") == "ProxyHeadersMiddleware"]

    assert proxies(make_app()) == []
    [proxy] = proxies(make_app(trusted_proxies="10.0.0.0/8"))
    assert proxy == {"trusted_hosts": "10.0.0.0/8"}


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    assert Settings(scoring_workers=0, trusted_proxies=" 10.0.0.0/8, ::1 ,*").trusted_proxies == "10.0.0.0/8,::1,*"
    with pytest.raises(ValueError, match="not an IP address"):
        Settings(scoring_workers=0, trusted_proxies="ingress.local")
