"""The audit trail of a real service process on loopback (issue 21): tokens, deployments, models and users each
leave one line with who, which instance, from where and when; no password, token or Kafka credential ever does."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable

import pytest
import requests

from tests.conftest import signing_key_of
from tests.integration.test_wml_repository_api import meta, skops_bytes
from tests.integration.test_wml_service_api import MODEL, SECRET, SPARK_SECRET, body, client_for, spark
from wml_localplatform.wmlservice import WMLService

pytestmark = pytest.mark.integration

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
WRONG_PASSWORD = "not-the-password-" + SECRET[-8:]


def token(service: WMLService, version: str, username: str, password: str) -> requests.Response:
    return requests.get(f"{service.url}/{version}/identity/token", auth=(username, password), timeout=10)


def local_account() -> str:
    from wml_server.audit import os_user

    return os_user()


def test_every_change_is_recorded_once_and_no_secret_is(make_wml_service: Callable[..., WMLService]) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false")
    user = service.add_user()
    tokens: list[str] = []

    # Tokens: a refused one (the name tried, not the password), both paths, a refresh.
    assert token(service, "v3", user.username, WRONG_PASSWORD).status_code == 401
    for version in ("v3", "v2"):
        resp = token(service, version, user.username, user.password)
        assert resp.status_code == 200, resp.text
        tokens.append(resp.json()["token"])
    refreshed = requests.put(f"{service.url}/v3/identity/token", json={"token": tokens[0]}, timeout=10)
    assert refreshed.status_code == 200, refreshed.text
    tokens.append(refreshed.json()["token"])

    # A deployment created (with Kafka and Spark secrets in its body), stopped, started, deleted.
    api = client_for(service, user)
    created = api.create_deployment(MODEL, body(), spark())
    api.set_deployment_status(MODEL, created.id, "STOPPED")
    api.set_deployment_status(MODEL, created.id, "RUNNING", spark())
    api.delete_deployment(MODEL, created.id)
    # A user's model published, then deleted.
    asset = api.publish_model(meta(), io.BytesIO(skops_bytes()))
    assert asset.entity.latest_version is not None
    api.delete_model_asset(asset.id)
    tokens.append(api._auth.token())  # the client's own token (private: no public way to read it)
    service.delete_user(user.username)

    trail = service.data_dir / "audit.jsonl"
    assert service.audit_file == trail
    assert trail.stat().st_mode & 0o777 == 0o600
    text = trail.read_text()
    for secret in [user.password, WRONG_PASSWORD, SECRET, "key-" + SECRET, SPARK_SECRET, *tokens]:
        assert secret not in text, f"{secret[:6]}... is in the audit trail"
    signing_key = signing_key_of(service.data_dir, service.key_file)  # kept encrypted in the database
    assert signing_key
    assert signing_key not in text

    records = service.audit_records()
    for record in records:
        assert TIME.match(record["time"]), record
    http = [r for r in records if r["client"] != "cli"]
    assert all(r["client"] == "127.0.0.1" for r in http)
    assert all(r["instance"] == user.instance_id for r in http if r["event"] != "token.refused")
    assert all(r["user"] == user.username for r in http)
    # The client asks for its token before its first call: the fourth token.issued, v3.
    assert [(r["event"], r.get("via") or r.get("state"), r.get("outcome")) for r in http] == [
        ("token.refused", "v3", "refused"),
        ("token.issued", "v3", "ok"), ("token.issued", "v2", "ok"), ("token.issued", "refresh", "ok"),
        ("token.issued", "v3", "ok"),
        ("deployment.created", "RUNNING", "ok"), ("deployment.patched", "STOPPED", "ok"),
        ("deployment.patched", "RUNNING", "ok"), ("deployment.deleted", None, "ok"),
        ("model.created", None, "ok"), ("model.published", None, "ok"), ("model.deleted", None, "ok"),
    ]
    assert http[0]["reason"] == "invalid_credentials"
    assert {r["deployment_id"] for r in http if r["event"].startswith("deployment.")} == {created.id}
    assert {r["model_id"] for r in http if r["event"].startswith("model.")} == {asset.id}
    assert http[-2]["version_id"] == asset.entity.latest_version.guid

    cli = [r for r in records if r["client"] == "cli"]
    assert [(r["event"], r["username"], r["instance"]) for r in cli] == [
        ("user.added", user.username, user.instance_id), ("user.removed", user.username, user.instance_id)]
    assert all(r["user"] == local_account() for r in cli)


def test_a_refused_change_is_not_recorded_and_a_stranger_only_as_refused(
        make_wml_service: Callable[..., WMLService]) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false")
    user = service.add_user()
    bearer = {"Authorization": f"Bearer {token(service, 'v3', user.username, user.password).json()['token']}"}
    path = f"{service.url}/v3/wml_instances/{user.instance_id}/published_models/{MODEL}/deployments"
    refused = requests.post(path, json={"type": "stream", "name": "no input"}, headers=bearer, timeout=10)
    assert refused.status_code == 400, refused.text
    assert token(service, "v3", "nobody-" + user.username, user.password).status_code == 401
    assert requests.get(f"{service.url}/v3/identity/token", timeout=10).status_code == 401
    assert requests.put(f"{service.url}/v3/identity/token", json={"token": "x.y.z"}, timeout=10).status_code == 401

    events = [(r["event"], r.get("user"), r.get("reason")) for r in service.audit_records()]
    assert events == [("user.added", local_account(), "new"), ("token.issued", user.username, None),
                      ("token.refused", "nobody-" + user.username, "invalid_credentials"),
                      ("token.refused", None, "missing_authorization"),
                      ("token.refused", None, "invalid_token_format")]


def test_a_rate_limited_token_request_is_recorded_as_refused(make_wml_service: Callable[..., WMLService]) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false", WML_SERVER_RATE_LIMIT="2")
    user = service.add_user()
    answers = [token(service, "v2", user.username, user.password).status_code for _ in range(3)]
    assert answers == [200, 200, 429]
    assert [(r["event"], r["user"], r.get("reason")) for r in service.audit_records()][1:] == [
        ("token.issued", user.username, None), ("token.issued", user.username, None),
        ("token.refused", user.username, "rate_limit_exceeded")]
    assert service.audit_file is not None
    assert user.password not in service.audit_file.read_text()


def test_dash_sends_the_trail_to_standard_output(make_wml_service: Callable[..., WMLService]) -> None:
    """In a pod, "-" puts the trail in the pod's log; here the service's stdout is its log file."""
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false", WML_SERVER_AUDIT_LOG="-")
    user = service.add_user()  # the CLI reads the same variable: its line goes to its own stdout
    assert token(service, "v3", user.username, user.password).status_code == 200
    lines = [json.loads(text) for text in service.log.read_text().splitlines() if text.startswith('{"time"')]
    assert [(r["event"], r["user"]) for r in lines] == [("token.issued", user.username)]
    assert not (service.data_dir / "audit.jsonl").exists()
