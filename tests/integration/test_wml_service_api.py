"""The WML service's v3 API over real HTTP on loopback, driven by the project's own client (wml_api)."""

from __future__ import annotations

import base64
import http.client
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import STORED_SECRETS
from wml_api import errors as E
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_api.models import (
    DeploymentCreate,
    KafkaConnection,
    SparkCredentials,
    SparkServiceInstance,
    StreamInput,
    StreamOutput,
)
from wml_localplatform.wmlservice import WMLService, WMLUser

MODEL = "3b1f3d7e-5c1a-4d8e-9b7a-6f0e2c9d4a11"
SECRET = "kafka-pass-" + uuid.uuid4().hex
SPARK_SECRET = "tenant-secret-" + uuid.uuid4().hex
STORED_SECRETS.update({SECRET, SPARK_SECRET})  # stored by the service: never in plaintext in its data folder


def spark() -> SparkServiceInstance:
    return SparkServiceInstance(credentials=SparkCredentials(
        tenant_id="t", tenant_id_full="t-full", cluster_master_url="https://spark.local", instance_id="i",
        tenant_secret=SPARK_SECRET, plan="ibm.SparkService.PayGoPersonal"))


def body(name: str = "Sentiment Prediction") -> DeploymentCreate:
    conn = KafkaConnection(kafka_brokers_sasl=["127.0.0.1:9"], user="wml", password=SECRET,
                           api_key="key-" + SECRET, security_protocol="SASL_PLAINTEXT")
    return DeploymentCreate(name=name, type="stream", description="Streaming deployment",
                            input=StreamInput(connection=conn, source={"topic": "sinput"}),
                            output=StreamOutput(connection=conn, target={"topic": "soutput"}))


def client_for(service: WMLService, user: WMLUser) -> WMLClient:
    return WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)


@pytest.fixture
def api(wml_api_service: WMLService, wml_user: WMLUser) -> WMLClient:
    return client_for(wml_api_service, wml_user)


def token_of(service: WMLService, user: WMLUser, version: str = "v3") -> str:
    resp = requests.get(f"{service.url}/{version}/identity/token", auth=(user.username, user.password), timeout=10)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["token"])


def raw(service: WMLService, user: WMLUser, method: str, path: str, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token_of(service, user)}", **kw.pop("headers", {})}
    return requests.request(method, f"{service.url}{path}", headers=headers, timeout=10, **kw)


def error_code(resp: requests.Response) -> str:
    doc = resp.json()
    assert set(doc) == {"trace", "errors"}, doc
    return str(doc["errors"][0]["code"])


def test_tokens_on_both_paths_and_refresh(wml_api_service: WMLService, wml_user: WMLUser) -> None:
    v3, v2 = token_of(wml_api_service, wml_user), token_of(wml_api_service, wml_user, "v2")
    claims = json.loads(base64.urlsafe_b64decode(v3.split(".")[1] + "=="))
    assert claims["instanceId"] == wml_user.instance_id
    assert claims["userId"] == wml_user.username
    assert claims["exp"] - claims["iat"] == 8 * 3600
    assert v2.count(".") == 2
    refreshed = requests.put(f"{wml_api_service.url}/v3/identity/token", json={"token": v3}, timeout=10)
    assert refreshed.status_code == 200
    bad = requests.get(f"{wml_api_service.url}/v3/identity/token", auth=(wml_user.username, "wrong"), timeout=10)
    assert bad.status_code == 401
    assert error_code(bad) == "invalid_credentials"
    unknown = requests.get(f"{wml_api_service.url}/v3/identity/token", auth=("nobody", "x"), timeout=10)
    assert unknown.status_code == 401


@pytest.mark.parametrize(("header", "code"), [
    (None, "missing_authorization_token"),
    ("Bearer not-a-jwt", "invalid_token_format"),
    ("Basic Zm9vOmJhcg==", "invalid_token_format"),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln", "invalid_authorization_token"),
])
def test_every_endpoint_but_tokens_needs_a_valid_token(wml_api_service: WMLService, wml_user: WMLUser,
                                                       header: str | None, code: str) -> None:
    headers = {"Authorization": header} if header else {}
    resp = requests.get(f"{wml_api_service.url}/v3/wml_instances/{wml_user.instance_id}", headers=headers,
                        timeout=10)
    assert resp.status_code == 401
    assert error_code(resp) == code


def test_instance_and_models(api: WMLClient, wml_user: WMLUser) -> None:
    instance = api.get_instance()
    assert instance.id == wml_user.instance_id
    assert instance.entity.status == "Active"
    models = api.list_published_models()
    assert [m.id for m in models] == [MODEL, "8d2c6b1e-4f7a-4c39-a5e0-71b9d3f2c846"]  # 2 and 3 classes
    model = api.get_published_model(MODEL)
    assert model.entity.name == "Sentiment Prediction"
    assert "spark" not in str(model.entity.runtime_environment).lower()
    with pytest.raises(E.NotFound):
        api.get_published_model(str(uuid.uuid4()))


def test_create_get_list_and_delete(api: WMLClient, wml_api_service: WMLService, wml_user: WMLUser) -> None:
    created = api.create_deployment(MODEL, body(), spark())
    assert created.metadata.url.endswith(f"/deployments/{created.id}")
    assert created.entity.status in ("INITIALIZING", "RUNNING")
    assert created.entity.runtime_environment
    assert "spark" not in created.entity.runtime_environment
    text = created.model_dump_json()
    assert SECRET not in text
    assert SPARK_SECRET not in text
    assert created.entity.input is not None
    assert created.entity.input.connection.password == "********"

    assert api.get_deployment(MODEL, created.id).id == created.id
    assert api.get_instance_deployment(created.id).id == created.id
    assert [d.id for d in api.list_deployments(MODEL, type="stream")] == [created.id]
    assert api.list_deployments(MODEL, type="online") == []
    assert [d.id for d in api.list_instance_deployments()] == [created.id]

    location = raw(wml_api_service, wml_user, "POST",
                   f"/v3/wml_instances/{wml_user.instance_id}/published_models/{MODEL}/deployments",
                   json=body("second").model_dump(mode="json"),
                   headers={"X-Spark-Service-Instance": spark().to_header()})
    assert location.status_code == 201
    assert location.headers["Location"] == location.json()["metadata"]["url"]

    api.delete_deployment(MODEL, created.id)
    with pytest.raises(E.NotFound):
        api.get_deployment(MODEL, created.id)
    with pytest.raises(E.NotFound):
        api.delete_deployment(MODEL, created.id)
    api.delete_instance_deployment(location.json()["metadata"]["guid"])
    assert api.list_instance_deployments() == []


def test_start_and_stop(api: WMLClient) -> None:
    dep = api.create_deployment(MODEL, body(), spark())
    api.set_deployment_status(MODEL, dep.id, "STOPPED", spark())
    assert api.get_deployment(MODEL, dep.id).status == "STOPPED"
    api.set_deployment_status(MODEL, dep.id, "STOPPED", None)  # same state: 204, nothing changes
    assert api.get_deployment(MODEL, dep.id).status == "STOPPED"
    assert [d.id for d in api.list_deployments(MODEL, status="STOPPED")] == [dep.id]
    api.set_deployment_status(MODEL, dep.id, "RUNNING", spark())
    assert api.get_deployment(MODEL, dep.id).status == "RUNNING"  # accept-only: no Kafka to wait for


@pytest.mark.parametrize(("patch", "code"), [
    ([], "patch_multiple_ops"),
    ([{"op": "replace", "path": "/status", "value": "STOPPED"}] * 2, "patch_multiple_ops"),
    ([{"op": "add", "path": "/status", "value": "STOPPED"}], "patch_multiple_ops"),
    ({"op": "replace"}, "patch_multiple_ops"),
    ([{"op": "replace", "path": "/name", "value": "x"}], "wrong_stream_patch_path"),
    ([{"op": "replace", "path": "/status", "value": "PAUSED"}], "invalid_status_value"),
])
def test_patch_validation(api: WMLClient, wml_api_service: WMLService, wml_user: WMLUser, patch: Any,
                          code: str) -> None:
    dep = api.create_deployment(MODEL, body(), spark())
    resp = raw(wml_api_service, wml_user, "PATCH",
               f"/v3/wml_instances/{wml_user.instance_id}/published_models/{MODEL}/deployments/{dep.id}", json=patch)
    assert resp.status_code == 400
    assert error_code(resp) == code
    if code == "wrong_stream_patch_path":
        assert resp.json()["errors"][0]["message"] == \
            "Path `/name` is not allowed. Only allowed path for patch stream is `/status`"
    assert api.get_deployment(MODEL, dep.id).status != "STOPPED"
    api.delete_deployment(MODEL, dep.id)


@pytest.mark.parametrize(("header", "code"), [
    (None, "missing_spark_service_instance"),
    ("%%%not-base64", "spark_header_deserialization_error"),
    (base64.b64encode(b"not json").decode(), "spark_header_deserialization_error"),
    (base64.b64encode(b'{"version": "2.0"}').decode(), "spark_header_deserialization_error"),
])
def test_create_needs_a_decodable_spark_header(wml_api_service: WMLService, wml_user: WMLUser,
                                               header: str | None, code: str) -> None:
    headers = {"X-Spark-Service-Instance": header} if header else {}
    resp = raw(wml_api_service, wml_user, "POST",
               f"/v3/wml_instances/{wml_user.instance_id}/published_models/{MODEL}/deployments",
               json=body().model_dump(mode="json"), headers=headers)
    assert resp.status_code == 400
    assert error_code(resp) == code
    if header is None:
        assert "X-Spark-Service-Instance" in resp.json()["errors"][0]["message"]


@pytest.mark.parametrize(("payload", "code"), [
    ({"name": "x", "type": "online"}, "unsupported_deployment_type"),
    ({"name": "x", "type": "stream"}, "missing_field"),
    ({"type": "stream"}, "invalid_request"),
    ({"name": "x", "type": "stream", "input": {"connection": {"kafka_brokers_sasl": []},
                                               "source": {"topic": "a"}}}, "invalid_request"),
])
def test_create_refuses_bad_bodies(wml_api_service: WMLService, wml_user: WMLUser, payload: dict[str, Any],
                                   code: str) -> None:
    resp = raw(wml_api_service, wml_user, "POST",
               f"/v3/wml_instances/{wml_user.instance_id}/published_models/{MODEL}/deployments",
               json=payload, headers={"X-Spark-Service-Instance": spark().to_header()})
    assert resp.status_code == 400, resp.text
    assert error_code(resp) == code


def test_malformed_json_and_huge_bodies_get_4xx(wml_api_service: WMLService, wml_user: WMLUser) -> None:
    path = f"/v3/wml_instances/{wml_user.instance_id}/published_models/{MODEL}/deployments"
    spark_header = {"X-Spark-Service-Instance": spark().to_header(), "Content-Type": "application/json"}
    broken = raw(wml_api_service, wml_user, "POST", path, data=b'{"name": ', headers=spark_header)
    assert broken.status_code == 400
    assert error_code(broken) == "invalid_request"
    huge = raw(wml_api_service, wml_user, "POST", path, data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
               headers=spark_header)
    assert huge.status_code == 413
    assert error_code(huge) == "request_too_large"


def test_chunked_bodies_are_limited_too(wml_api_service: WMLService, wml_user: WMLUser) -> None:
    """No Content-Length to check up front: the limit holds while the body is read."""
    path = f"/v3/wml_instances/{wml_user.instance_id}/published_models/{MODEL}/deployments"
    headers = {"X-Spark-Service-Instance": spark().to_header(), "Content-Type": "application/json"}

    def chunks(total: int) -> Iterator[bytes]:
        yield b"{"
        for _ in range(total // 65536):
            yield b" " * 65536
        yield b"}"

    huge = raw(wml_api_service, wml_user, "POST", path, data=chunks(3 * 1024 * 1024), headers=headers)
    assert huge.request.headers.get("Transfer-Encoding") == "chunked"
    assert huge.status_code == 413
    assert error_code(huge) == "request_too_large"
    small = raw(wml_api_service, wml_user, "POST", path, data=chunks(1024), headers=headers)
    assert small.status_code == 400  # read whole, then refused for what it says, not for its size
    assert error_code(small) == "invalid_request"


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({"Authorization": "Bearer not-a-jwt"}, 401, None),
    ({"Authorization": "Basic Zm9vOmJhcg=="}, 401, None),
    ({"Authorization": "Bearer " + "x" * 10000}, 401, None),
    ({"Authorization": "Bearer"}, 401, "invalid_token_format"),
], ids=["garbage-token", "basic-instead-of-bearer", "huge-token", "bearer-without-token"])
def test_bad_headers_get_4xx_in_the_documented_shape(wml_api_service: WMLService, wml_user: WMLUser,
                                                     headers: dict[str, str], status: int,
                                                     code: str | None) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", wml_api_service.port, timeout=10)
    conn.putrequest("GET", f"/v3/wml_instances/{wml_user.instance_id}/deployments")
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.endheaders()
    resp = conn.getresponse()
    doc = json.loads(resp.read())
    conn.close()
    assert resp.status == status, doc
    assert set(doc) == {"trace", "errors"}, doc
    if code:
        assert doc["errors"][0]["code"] == code


def test_unknown_ids_are_404(api: WMLClient, wml_api_service: WMLService, wml_user: WMLUser) -> None:
    with pytest.raises(E.NotFound):
        api.get_deployment(MODEL, str(uuid.uuid4()))
    with pytest.raises(E.NotFound):
        api.get_instance_deployment(str(uuid.uuid4()))
    with pytest.raises(E.NotFound):
        api.create_deployment(str(uuid.uuid4()), body(), spark())
    resp = raw(wml_api_service, wml_user, "GET", "/v3/nothing-here")
    assert resp.status_code == 404
    assert error_code(resp) == "not_found"


def test_instances_are_isolated(wml_api_service: WMLService) -> None:
    alice, bob = wml_api_service.add_user(), wml_api_service.add_user()
    as_alice = client_for(wml_api_service, alice)
    dep = as_alice.create_deployment(MODEL, body(), spark())
    # Bob's token on Alice's instance path: refused.
    resp = raw(wml_api_service, bob, "GET", f"/v3/wml_instances/{alice.instance_id}/deployments/{dep.id}")
    assert resp.status_code == 403
    assert error_code(resp) == "instance_access_denied"
    # Alice's deployment id under Bob's own instance: it does not exist there.
    as_bob = client_for(wml_api_service, bob)
    with pytest.raises(E.NotFound):
        as_bob.get_instance_deployment(dep.id)
    with pytest.raises(E.NotFound):
        as_bob.delete_instance_deployment(dep.id)
    assert as_bob.list_instance_deployments() == []
    assert as_alice.get_instance_deployment(dep.id).id == dep.id


def test_plan_limit(api: WMLClient) -> None:
    made = [api.create_deployment(MODEL, body(f"d{i}"), spark()) for i in range(5)]
    with pytest.raises(E.BadRequest) as refused:
        api.create_deployment(MODEL, body("one too many"), spark())
    assert refused.value.code == "deployments_plan_limit_reached"
    assert refused.value.message == "Current plan 'lite' only allows 5 deployments"
    api.delete_deployment(MODEL, made[0].id)
    api.create_deployment(MODEL, body("fits again"), spark())


def test_instance_list_pages(api: WMLClient, wml_api_service: WMLService, wml_user: WMLUser) -> None:
    ids = [api.create_deployment(MODEL, body(f"p{i}"), spark()).id for i in range(3)]
    page1 = raw(wml_api_service, wml_user, "GET", f"/v3/wml_instances/{wml_user.instance_id}/deployments",
                params={"limit": 2}).json()
    assert page1["count"] == 3
    assert len(page1["resources"]) == 2
    assert "next" in page1
    assert [d.id for d in api.list_instance_deployments()] == ids  # the client follows `next`
