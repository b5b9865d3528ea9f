"""The service's security basics: nothing but the token endpoints answers without a token; TLS with a given
certificate, verified by the client; rate limits, and password guessing limited per address and counted."""

from __future__ import annotations

import base64
import http.client
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.conftest import Figures
from wml_api import errors as E
from wml_api.auth import TokenCache
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_localplatform.certs import CertificateAuthority
from wml_localplatform.wmlservice import WMLService, WMLUser

TOKEN_PATHS = {"/v3/identity/token", "/v2/identity/token"}


def test_no_endpoint_but_the_token_ones_answers_without_a_token(wml_api_service: WMLService,
                                                                wml_user: WMLUser) -> None:
    spec = requests.get(f"{wml_api_service.url}/openapi.json", timeout=10).json()
    checked = 0
    for template, methods in spec["paths"].items():
        if template in TOKEN_PATHS:
            continue
        path = template.replace("{instance_id}", wml_user.instance_id)
        path = path.replace("{model_id}", "3b1f3d7e-5c1a-4d8e-9b7a-6f0e2c9d4a11")
        path = path.replace("{deployment_id}", str(uuid.uuid4()))
        for method in methods:
            resp = requests.request(method.upper(), f"{wml_api_service.url}{path}", json=[], timeout=10)
            assert resp.status_code == 401, f"{method.upper()} {template} answered {resp.status_code}"
            assert resp.json()["errors"][0]["code"] == "missing_authorization_token"
            checked += 1
    assert checked >= 10


def test_a_body_that_is_not_json_is_judged_only_with_the_right_token(wml_api_service: WMLService,
                                                                      wml_user: WMLUser) -> None:
    """FastAPI parses a JSON body before the token check runs: without the token of the path's instance the
    answer is that of the token check, and nothing is said about the body."""
    other = wml_api_service.add_user()

    def token(user: WMLUser) -> str:
        resp = requests.get(f"{wml_api_service.url}/v3/identity/token", auth=(user.username, user.password),
                            timeout=10)
        return str(resp.json()["token"])

    spec = requests.get(f"{wml_api_service.url}/openapi.json", timeout=10).json()
    # Every operation that takes a JSON body (a model's content is not JSON and is not parsed as such).
    cases = [(method, template) for template, methods in spec["paths"].items() if template not in TOKEN_PATHS
             for method, op in methods.items() if method in ("post", "put", "patch")
             and "application/json" in op.get("requestBody", {}).get("content", {})]
    assert len(cases) >= 3, cases
    for method, template in cases:
        # The repository's paths name no instance: another instance's token is a valid caller there.
        other_answer = (403, "instance_access_denied") if "{instance_id}" in template else None
        path = template.replace("{instance_id}", wml_user.instance_id)
        path = path.replace("{model_id}", "3b1f3d7e-5c1a-4d8e-9b7a-6f0e2c9d4a11")
        path = path.replace("{deployment_id}", str(uuid.uuid4()))
        # Not JSON (pydantic's 400), and not even text (FastAPI's own "error parsing the body").
        for body, invalid in ((b"{not json", "invalid_request"), (b"\x17\xff\x14", "bad_request")):
            for headers, status, code in (
                    ({}, 401, "missing_authorization_token"),
                    ({"Authorization": "Basic eDp5"}, 401, "invalid_token_format"),
                    ({"Authorization": f"Bearer {token(other)}"}, *(other_answer or (400, invalid))),
                    ({"Authorization": f"Bearer {token(wml_user)}"}, 400, invalid)):
                resp = requests.request(method.upper(), f"{wml_api_service.url}{path}", data=body,
                                        headers={"Content-Type": "application/json", **headers}, timeout=10)
                got = (resp.status_code, resp.json()["errors"][0]["code"])
                assert got == (status, code), (method, template, body, headers)


def test_tls_with_a_given_certificate_is_verified_by_the_client(make_wml_service: Callable[..., WMLService],
                                                                tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    pair = ca.issue("wml", "wml-server", server=True)
    service = make_wml_service(ca_file=ca.cert_path, WML_SERVER_RUN_STREAMS="false",
                               WML_SERVER_TLS_CERT=str(pair.cert), WML_SERVER_TLS_KEY=str(pair.key))
    user = service.add_user()
    url = service.url
    assert url.startswith("https://")
    trusted = WMLClient(url, WMLCredentials(user.username, user.password), user.instance_id,
                        ca_bundle=str(ca.cert_path), token_cache=TokenCache())
    assert trusted.get_instance().id == user.instance_id
    untrusted = WMLClient(url, WMLCredentials(user.username, user.password), user.instance_id,
                          token_cache=TokenCache())
    with pytest.raises(E.TLSError):
        untrusted.get_instance()


def test_a_rate_limit_answers_429_with_retry_after_per_user_and_per_address(
        make_wml_service: Callable[..., WMLService]) -> None:
    service = make_wml_service(WML_SERVER_RATE_LIMIT="6")
    one, two = service.add_user(), service.add_user()

    def token(user: WMLUser) -> requests.Response:
        return requests.get(f"{service.url}/v3/identity/token", auth=(user.username, user.password), timeout=10)

    bearer = {"Authorization": f"Bearer {token(one).json()['token']}"}
    instance = f"{service.url}/v3/wml_instances/{one.instance_id}"
    statuses = [requests.get(instance, headers=bearer, timeout=10).status_code for _ in range(7)]
    assert statuses == [200] * 6 + [429]
    refused = requests.get(instance, headers=bearer, timeout=10)
    assert refused.status_code == 429
    assert refused.json()["errors"][0]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 10  # one request every 10 s at 6 a minute
    # Another user has a bucket of their own; the client sees a RateLimited with the wait.
    with WMLClient(service.url, WMLCredentials(two.username, two.password), two.instance_id,
                   token_cache=TokenCache()) as client:
        for _ in range(6):
            client.get_instance()
        with pytest.raises(E.RateLimited) as limited:
            client.get_instance()
        assert limited.value.retry_after is not None
        assert limited.value.retry_after >= 1
    # Token requests count by the client's address (two made above: user one's, the client's): six in all.
    assert [token(one).status_code for _ in range(5)] == [200, 200, 200, 200, 429]


def _failed_logins(service: WMLService) -> dict[str, float]:
    """wml_token_requests_failed_total by reason, as /metrics shows it."""
    text = requests.get(f"{service.url}/metrics", timeout=10).text
    found = re.findall(r'^wml_token_requests_failed_total\{reason="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {reason: float(value) for reason, value in found}


def _token_from(service: WMLService, source: str, username: str, password: str,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """A token request from another loopback address (127.0.0.0/8 is all local): a second client address."""
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10, source_address=(source, 0))
    try:
        auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        conn.request("GET", "/v3/identity/token", headers={"Authorization": f"Basic {auth}", **(headers or {})})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def test_password_guessing_is_limited_per_address_by_default_and_counted(
        make_wml_service: Callable[..., WMLService], figures: Figures) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false")  # no token setting: the default
    user = service.add_user()
    url = f"{service.url}/v3/identity/token"
    started, guesses = time.monotonic(), 0
    while (resp := requests.get(url, auth=(user.username, f"guess-{guesses}"), timeout=10)).status_code == 401:
        guesses += 1
        assert guesses < 400, "no limit on password guessing"
    elapsed = time.monotonic() - started
    # 60 a minute in bursts of 60: the burst, plus what refilled (one a second) while the guesses ran.
    assert 60 <= guesses <= 60 + elapsed + 1, (guesses, elapsed)
    assert resp.status_code == 429
    assert resp.json()["errors"][0]["code"] == "rate_limit_exceeded"
    assert int(resp.headers["Retry-After"]) >= 1
    # A header cannot make the same client another address: X-Forwarded-For is not believed by default.
    status, _ = _token_from(service, "127.0.0.1", user.username, user.password,
                            headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 429
    # Another address has a bucket of its own: the right password works from there.
    assert _token_from(service, "127.0.0.2", user.username, user.password)[0] == 200
    counted = _failed_logins(service)
    assert counted["bad_credentials"] == guesses
    assert counted["rate_limited"] == 2
    figures.add("security", check="password guessing on the token endpoint, default limit",
                result=f"429 after {guesses} wrong passwords in {elapsed:.1f} s",
                detail=f"counted in /metrics: {counted['bad_credentials']:.0f} bad_credentials, "
                       f"{counted['rate_limited']:.0f} rate_limited; X-Forwarded-For ignored; another address served")


def test_a_limited_address_waits_even_with_the_right_password(make_wml_service: Callable[..., WMLService]) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false", WML_SERVER_TOKEN_RATE_LIMIT="3")
    user = service.add_user()
    url = f"{service.url}/v3/identity/token"
    answers = [requests.get(url, auth=(user.username, "wrong"), timeout=10) for _ in range(4)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    right = requests.get(url, auth=(user.username, user.password), timeout=10)
    assert right.status_code == 429
    assert right.json()["errors"][0]["code"] == "rate_limit_exceeded"
    assert "3 token requests per minute" in right.json()["errors"][0]["message"]
    assert 15 <= int(right.headers["Retry-After"]) <= 20  # one request every 20 s at 3 a minute
    refresh = requests.put(url, json={"token": "x.y.z"}, timeout=10)  # the refresh counts too
    assert refresh.status_code == 429
    assert _failed_logins(service) == {"bad_credentials": 3, "bad_request": 0, "bad_token": 0,
                                       "rate_limited": 3, "other": 0}
    text = requests.get(f"{service.url}/metrics", timeout=10).text
    assert user.username not in text
    assert re.search(r"^wml_tokens_issued_total 0\.0$", text, re.MULTILINE)


def test_a_token_rate_limit_of_zero_is_no_limit(make_wml_service: Callable[..., WMLService]) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false", WML_SERVER_TOKEN_RATE_LIMIT="0")
    user = service.add_user()
    url = f"{service.url}/v3/identity/token"
    statuses = {requests.get(url, auth=(user.username, "wrong"), timeout=10).status_code for _ in range(70)}
    assert statuses == {401}
    assert requests.get(url, auth=(user.username, user.password), timeout=10).status_code == 200
    assert _failed_logins(service)["bad_credentials"] == 70
    assert _failed_logins(service)["rate_limited"] == 0
