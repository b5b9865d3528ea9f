"""The service's security basics: nothing but the token endpoints answers without a token; TLS with a given
certificate, verified by the client."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

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
