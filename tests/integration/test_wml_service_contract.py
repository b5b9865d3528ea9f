"""The contract, from the service's side: every answer of the real service, on every path, parses into the
wml_api model the operator parses it with, and says nothing the contract does not name (the models keep
unknown fields, so parsing alone would let a misspelt field through). Credentials never come back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from pydantic import BaseModel

from tests.integration.test_wml_service_api import MODEL, SECRET, SPARK_SECRET, body, spark
from wml_api.models import (
    EXTENSIONS,
    MASK,
    Deployment,
    DeploymentList,
    DeploymentStatus,
    DryRunReport,
    ErrorBody,
    PublishedModel,
    PublishedModelList,
    TokenResponse,
    WMLInstance,
)
from wml_api.paths import (
    IDENTITY_V2,
    IDENTITY_V3,
    INSTANCE,
    INSTANCE_DEPLOYMENT,
    INSTANCE_DEPLOYMENTS,
    MODEL_DEPLOYMENT,
    MODEL_DEPLOYMENTS,
    MODELS,
    fill,
)
from wml_api.paths import MODEL as MODEL_PATH
from wml_localplatform.wmlservice import WMLService, WMLUser

pytestmark = pytest.mark.integration

# What the service sends beyond the contract's fields, on purpose; anything else is a field the operator
# would silently drop.
KNOWN_EXTRAS = {"entity.plan", "entity.region"}


def extras(model: BaseModel, where: str = "") -> set[str]:
    """Every field of a parsed body that its model does not name, as a dotted path (list items as [])."""
    found = {f"{where}{name}" for name in (model.model_extra or {})}
    for name in type(model).model_fields:
        value = getattr(model, name)
        for item, suffix in ([(v, "[]") for v in value] if isinstance(value, list) else [(value, "")]):
            if isinstance(item, BaseModel):
                found |= extras(item, f"{where}{name}{suffix}.")
    return found


class Caller:
    def __init__(self, service: WMLService, user: WMLUser) -> None:
        self.service, self.user = service, user
        resp = requests.get(service.url + IDENTITY_V3, auth=(user.username, user.password), timeout=10)
        self.token = TokenResponse.model_validate(resp.json()).token

    def path(self, template: str, **ids: str) -> str:
        return fill(template, instance_id=self.user.instance_id, **ids)

    def call(self, method: str, path: str, *, token: str | None = None, anonymous: bool = False,
             **kw: Any) -> requests.Response:
        """With this caller's token unless another `token` is given, or none at all when `anonymous`."""
        headers = {"X-Spark-Service-Instance": spark().to_header(), **kw.pop("headers", {})}
        if not anonymous:
            headers.setdefault("Authorization", f"Bearer {token or self.token}")
        return requests.request(method, self.service.url + path, headers=headers, timeout=10, **kw)

    def parsed(self, model: type[Any], method: str, path: str, status: int = 200, *,
               allowed: frozenset[str] | set[str] = frozenset(), **kw: Any) -> Any:
        resp = self.call(method, path, **kw)
        assert resp.status_code == status, resp.text
        assert resp.headers["content-type"] == "application/json"
        assert SECRET not in resp.text
        assert SPARK_SECRET not in resp.text
        parsed = model.model_validate(resp.json())
        assert extras(parsed) <= KNOWN_EXTRAS | allowed, extras(parsed)
        return parsed


@pytest.fixture
def caller(wml_api_service: WMLService, wml_user: WMLUser) -> Caller:
    return Caller(wml_api_service, wml_user)


@pytest.fixture
def deployment(caller: Caller) -> Iterator[Deployment]:
    created: Deployment = caller.parsed(Deployment, "POST", caller.path(MODEL_DEPLOYMENTS, model_id=MODEL), 201,
                                        json=body().model_dump(mode="json", exclude_none=True))
    yield created
    caller.call("DELETE", caller.path(INSTANCE_DEPLOYMENT, deployment_id=created.id))


def assert_masked(dep: Deployment) -> None:
    assert dep.entity.input is not None
    assert dep.entity.output is not None
    assert dep.entity.spark_service
    for connection in (dep.entity.input.connection, dep.entity.output.connection):
        assert (connection.password, connection.api_key) == (MASK, MASK)
        assert connection.user == "wml"
    assert dep.entity.spark_service.credentials["tenant_secret"] == MASK


def test_instance_and_models(caller: Caller) -> None:
    instance: WMLInstance = caller.parsed(WMLInstance, "GET", caller.path(INSTANCE))
    assert instance.id == caller.user.instance_id
    assert instance.entity.status == "Active"
    assert instance.entity.deployments is not None
    assert instance.entity.deployments.url.endswith(caller.path(INSTANCE_DEPLOYMENTS))
    assert instance.entity.extensions == list(EXTENSIONS)
    models: PublishedModelList = caller.parsed(PublishedModelList, "GET", caller.path(MODELS))
    assert MODEL in [m.id for m in models.resources]
    assert models.count == len(models.resources)
    model: PublishedModel = caller.parsed(PublishedModel, "GET", caller.path(MODEL_PATH, model_id=MODEL))
    assert model.entity.deployments is not None
    assert model.entity.latest_version is not None
    assert model.metadata.url is not None
    assert model.metadata.url.endswith(caller.path(MODEL_PATH, model_id=MODEL))


def test_every_deployment_path(caller: Caller, deployment: Deployment) -> None:
    # The accept-only service reports RUNNING at once; a running one says INITIALIZING first.
    assert deployment.entity.status in {DeploymentStatus.INITIALIZING, DeploymentStatus.RUNNING}
    assert deployment.model_id == MODEL
    assert deployment.metadata.url is not None
    assert deployment.metadata.url.endswith(f"/deployments/{deployment.id}")
    assert_masked(deployment)
    by_model = caller.path(MODEL_DEPLOYMENT, model_id=MODEL, deployment_id=deployment.id)
    by_instance = caller.path(INSTANCE_DEPLOYMENT, deployment_id=deployment.id)
    for path in (by_model, by_instance):
        got: Deployment = caller.parsed(Deployment, "GET", path)
        assert got.id == deployment.id
        assert_masked(got)
    for path, query in ((caller.path(MODEL_DEPLOYMENTS, model_id=MODEL), {"type": "stream"}),
                        (caller.path(INSTANCE_DEPLOYMENTS), {"limit": "1"})):
        listed: DeploymentList = caller.parsed(DeploymentList, "GET", path, params=query)
        assert [d.id for d in listed.resources] == [deployment.id]
        for dep in listed.resources:
            assert_masked(dep)
    stopped = caller.call("PATCH", by_model, json=[{"op": "replace", "path": "/status", "value": "STOPPED"}])
    assert (stopped.status_code, stopped.content) == (204, b"")
    assert caller.parsed(Deployment, "GET", by_instance).status == DeploymentStatus.STOPPED


def test_a_failed_deployment_carries_its_reason_where_the_contract_reads_it(
        make_wml_service: Callable[..., WMLService]) -> None:
    # A broker nobody listens on: the real engine reports FAILED with the reason in status_details.
    service = make_wml_service(WML_SERVER_KAFKA_UNREACHABLE_TIMEOUT="1")
    caller = Caller(service, service.add_user())
    created: Deployment = caller.parsed(Deployment, "POST", caller.path(MODEL_DEPLOYMENTS, model_id=MODEL), 201,
                                        json=body().model_dump(mode="json", exclude_none=True))
    path = caller.path(INSTANCE_DEPLOYMENT, deployment_id=created.id)
    for _ in range(60):
        got: Deployment = caller.parsed(Deployment, "GET", path)
        if got.status == DeploymentStatus.FAILED:
            break
        time.sleep(0.5)
    assert got.status == DeploymentStatus.FAILED
    assert got.failure_message
    assert got.entity.status_details is not None
    assert got.entity.status_details.failure is not None


def test_tokens(caller: Caller) -> None:
    user, url = caller.user, caller.service.url
    for path in (IDENTITY_V3, IDENTITY_V2):
        resp = requests.get(url + path, auth=(user.username, user.password), timeout=10)
        assert TokenResponse.model_validate(resp.json()).token.count(".") == 2
        assert set(resp.json()) == {"token"}
    refreshed = requests.put(url + IDENTITY_V3, json={"token": caller.token}, timeout=10)
    assert TokenResponse.model_validate(refreshed.json()).token


def _error(resp: requests.Response, status: int, code: str) -> ErrorBody:
    assert resp.status_code == status, resp.text
    error = ErrorBody.model_validate(resp.json())
    assert extras(error) == set()
    assert [e.code for e in error.errors] == [code]
    assert error.trace
    assert error.errors[0].message
    return error


def test_errors_of_every_kind(caller: Caller, deployment: Deployment, wml_api_service: WMLService) -> None:
    url = caller.service.url
    create = caller.path(MODEL_DEPLOYMENTS, model_id=MODEL)
    patch = caller.path(MODEL_DEPLOYMENT, model_id=MODEL, deployment_id=deployment.id)
    good = body().model_dump(mode="json", exclude_none=True)
    head, claims, signature = caller.token.split(".")
    forged = f"{head}.{claims}.{'A' * len(signature)}"  # well formed, wrongly signed
    cases: list[tuple[requests.Response, int, str]] = [
        (caller.call("POST", create, json={"type": "stream"}), 400, "invalid_request"),
        (caller.call("POST", create, data=b'{"name": ', headers={"Content-Type": "application/json"}), 400,
         "invalid_request"),
        (caller.call("POST", create, json={**good, "type": "online"}), 400, "unsupported_deployment_type"),
        (caller.call("POST", create, json={"name": "x"}), 400, "missing_field"),
        (caller.call("POST", create, json=good, headers={"X-Spark-Service-Instance": ""}), 400,
         "missing_spark_service_instance"),
        (caller.call("POST", create, json=good, headers={"X-Spark-Service-Instance": "%%"}), 400,
         "spark_header_deserialization_error"),
        (caller.call("PATCH", patch, json=[]), 400, "patch_multiple_ops"),
        (caller.call("PATCH", patch, json=[{"op": "replace", "path": "/name", "value": "x"}]), 400,
         "wrong_stream_patch_path"),
        (caller.call("PATCH", patch, json=[{"op": "replace", "path": "/status", "value": "PAUSED"}]), 400,
         "invalid_status_value"),
        (caller.call("GET", caller.path(INSTANCE), anonymous=True), 401, "missing_authorization_token"),
        (caller.call("GET", caller.path(INSTANCE), token="not-a-jwt"), 401, "invalid_token_format"),
        (caller.call("GET", caller.path(INSTANCE), token=forged), 401, "invalid_authorization_token"),
        (caller.call("GET", caller.path(INSTANCE), headers={"Authorization": "Basic eDp5"}), 401,
         "invalid_token_format"),
        (caller.call("GET", fill(INSTANCE, instance_id=str(uuid.uuid4()))), 403, "instance_access_denied"),
        (caller.call("GET", caller.path(INSTANCE_DEPLOYMENT, deployment_id=str(uuid.uuid4()))), 404, "not_found"),
        (caller.call("GET", caller.path(MODEL_PATH, model_id=str(uuid.uuid4()))), 404, "not_found"),
        (caller.call("GET", "/v3/nothing-here"), 404, "not_found"),
        (caller.call("PUT", caller.path(INSTANCE)), 405, "method_not_allowed"),
        (caller.call("POST", create, data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                     headers={"Content-Type": "application/json"}), 413, "request_too_large"),
        (requests.get(url + IDENTITY_V3, timeout=10), 401, "missing_authorization"),
        (requests.get(url + IDENTITY_V3, auth=(caller.user.username, "wrong-password"), timeout=10), 401,
         "invalid_credentials"),
        (requests.put(url + IDENTITY_V3, json={"token": forged}, timeout=10), 401, "invalid_authorization_token"),
    ]
    got = [(resp.status_code, ErrorBody.model_validate(resp.json()).errors[0].code) for resp, _, _ in cases]
    assert got == [(status, code) for _, status, code in cases]
    for resp, status, code in cases:
        _error(resp, status, code)


def test_rate_limited_answers_too(make_wml_service: Callable[..., WMLService]) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false", WML_SERVER_RATE_LIMIT="1")
    user = service.add_user()
    answers = [requests.get(service.url + IDENTITY_V3, auth=(user.username, user.password), timeout=10)
               for _ in range(3)]
    assert answers[0].status_code == 200
    _error(answers[-1], 429, "rate_limit_exceeded")


def test_unknown_fields_in_a_create_are_tolerated_and_kept_where_the_contract_keeps_them(caller: Caller) -> None:
    sent = body().model_dump(mode="json", exclude_none=True)
    sent["future_field"] = {"x": 1}
    sent["input"]["connection"]["client_id"] = "tweets-reader"
    sent["input"]["connection"]["extra_credentials"] = {"password": SECRET}
    created: Deployment = caller.parsed(Deployment, "POST", caller.path(MODEL_DEPLOYMENTS, model_id=MODEL), 201,
                                        json=sent, allowed={"entity.input.connection.client_id",
                                                            "entity.input.connection.extra_credentials"})
    try:
        assert created.entity.input is not None
        assert created.entity.input.connection.model_dump()["client_id"] == "tweets-reader"
        assert created.entity.input.connection.model_dump()["extra_credentials"] == {"password": MASK}
    finally:
        caller.call("DELETE", caller.path(INSTANCE_DEPLOYMENT, deployment_id=created.id))


def test_extensions_in_accept_only_mode(caller: Caller) -> None:
    create = caller.path(MODEL_DEPLOYMENTS, model_id=MODEL)
    sent = body().model_dump(mode="json", exclude_none=True)
    # A dry run checks what a create checks (no Kafka without streams), and creates nothing.
    report: DryRunReport = caller.parsed(DryRunReport, "POST", create, params={"dry_run": "true"}, json=sent)
    assert report.checked
    assert caller.parsed(DeploymentList, "GET", caller.path(INSTANCE_DEPLOYMENTS)).count == 0
    _error(caller.call("POST", create, params={"dry_run": "true"}, json={"name": "x"}), 400, "missing_field")
    _error(caller.call("POST", caller.path(MODEL_DEPLOYMENTS, model_id=str(uuid.uuid4())),
                       params={"dry_run": "true"}, json=sent), 404, "not_found")
    # initial_status STOPPED: stored and reported STOPPED; accept-only reports no position or lag.
    stopped: Deployment = caller.parsed(Deployment, "POST", create, 201, params={"unknown_param": "1"},
                                        json={**sent, "initial_status": "STOPPED"})
    try:
        assert stopped.status == DeploymentStatus.STOPPED
        got: Deployment = caller.parsed(Deployment, "GET", caller.path(INSTANCE_DEPLOYMENT, deployment_id=stopped.id))
        assert got.status == DeploymentStatus.STOPPED
        assert got.entity.status_details is None
    finally:
        caller.call("DELETE", caller.path(INSTANCE_DEPLOYMENT, deployment_id=stopped.id))
