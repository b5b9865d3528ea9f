"""One reconcile pass against the real WML service (accept-only): idempotent create, drift, recreate, delete,
transient errors. No Kubernetes here: bodies are plain dicts, Secrets come from a dict."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support import DictSecrets
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_api.models import (
    DeploymentCreate,
    KafkaConnection,
    KafkaSource,
    KafkaTarget,
    SparkServiceInstance,
    StreamInput,
    StreamOutput,
)
from wml_localplatform import process
from wml_localplatform.wmlservice import WMLService, WMLUser
from wml_operator.reconcile import Reconciler
from wml_operator.resources import Resources
from wml_operator.secrets import Defaults
from wml_operator.status import Outcome
from wml_operator.wml import Instances, marker

MODEL = "3b1f3d7e-5c1a-4d8e-9b7a-6f0e2c9d4a11"
SPARK = {"tenant_id": "t", "tenant_id_full": "tf", "cluster_master_url": "https://s", "instance_id": "i",
         "tenant_secret": "ts", "plan": "p"}


def secrets_for(url: str, user: WMLUser) -> DictSecrets:
    return DictSecrets({
        "wml": {"url": url, "instance_id": user.instance_id, "username": user.username, "password": user.password},
        "kafka": {"kafka_brokers_sasl": "127.0.0.1:9", "user": "u", "password": "p",
                  "security_protocol": "SASL_PLAINTEXT"},
        "spark": {"credentials.json": json.dumps(SPARK)},
    })


def body(state: str = "RUNNING", status: dict[str, Any] | None = None, uid: str | None = None,
         generation: int = 1, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"uid": uid or str(uuid.uuid4()), "namespace": "ns", "name": "tweets",
                         "generation": generation, "annotations": annotations or {}},
            "spec": {"state": state, "modelId": MODEL, "wml": {"credentialsSecretRef": {"name": "wml"}},
                     "sparkCredentialsSecretRef": {"name": "spark", "key": "credentials.json"},
                     "input": {"topic": "in", "connectionSecretRef": {"name": "kafka"}},
                     "output": {"topic": "out", "connectionSecretRef": {"name": "kafka"}}},
            "status": status or {}}


def reconciler_for(secrets: DictSecrets, poll: float = 0.0) -> Reconciler:
    """The operator's reconciler over the real WML client; `poll`: the age of a deployment list a pass accepts."""
    return Reconciler(secrets, Instances(), Resources(poll, poll), Defaults())


@pytest.fixture
def world(wml_api_service: WMLService, wml_user: WMLUser) -> tuple[Reconciler, WMLClient, DictSecrets]:
    secrets = secrets_for(wml_api_service.url, wml_user)
    reconciler = reconciler_for(secrets)
    api = WMLClient(wml_api_service.url, WMLCredentials(wml_user.username, wml_user.password), wml_user.instance_id)
    return reconciler, api, secrets


def test_create_is_idempotent_when_the_status_write_was_lost(world: tuple[Reconciler, WMLClient, DictSecrets]) -> None:
    reconciler, api, _ = world
    first = body()
    outcome = reconciler.run(first)
    created = outcome.status["deploymentId"]
    assert [d.id for d in api.list_instance_deployments()] == [created]
    assert outcome.events[0][1] == "Creating"
    # The operator crashed before writing the status: the same resource (same UID), no status.
    again = reconciler.run(body(uid=first["metadata"]["uid"]))
    assert again.status["deploymentId"] == created
    assert [d.id for d in api.list_instance_deployments()] == [created]  # no duplicate


def test_a_second_deployment_of_the_resource_is_deleted(world: tuple[Reconciler, WMLClient, DictSecrets]) -> None:
    """A create that reached WML after the operator had given up on it and created again: two deployments
    carry the resource's marker; the one in status stays, the other goes."""
    reconciler, api, _ = world
    b = body()
    status = reconciler.run(b).status
    status = reconciler.run({**b, "status": status}).status  # Ready
    kept = status["deploymentId"]
    conn = KafkaConnection(kafka_brokers_sasl=["127.0.0.1:9"], user="u", password="p")
    late = api.create_deployment(MODEL, DeploymentCreate(
        name="ns/tweets", description=f"late {marker(b['metadata']['uid'])}",
        input=StreamInput(connection=conn, source=KafkaSource(topic="in")),
        output=StreamOutput(connection=conn, target=KafkaTarget(topic="out"))),
        SparkServiceInstance.model_validate({"credentials": SPARK}))
    outcome = reconciler.run({**b, "status": status})
    assert [d.id for d in api.list_instance_deployments()] == [kept]
    assert outcome.status["deploymentId"] == kept
    assert [(kind, reason) for kind, reason, _ in outcome.events] == [("Warning", "DuplicateDeleted")]
    assert late.id in outcome.events[0][2]


def test_ready_stop_and_drift(world: tuple[Reconciler, WMLClient, DictSecrets]) -> None:
    reconciler, api, _ = world
    b = body()
    status = reconciler.run(b).status
    status = reconciler.run({**b, "status": status}).status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["wmlStatus"], ready["status"], ready["reason"]) == ("RUNNING", "True", "Running")
    assert {c["type"] for c in status["conditions"]} == {"Ready"}  # kstatus: nothing abnormal, nothing else

    stopped = reconciler.run({**body("STOPPED", status, b["metadata"]["uid"], 2)}).status
    assert api.get_instance_deployment(stopped["deploymentId"]).status == "STOPPED"
    settled = reconciler.run(body("STOPPED", stopped, b["metadata"]["uid"], 2)).status
    assert next(c for c in settled["conditions"] if c["type"] == "Ready")["status"] == "True"
    assert settled["observedGeneration"] == 2

    api.set_deployment_status(MODEL, settled["deploymentId"], "RUNNING")  # started behind our back
    drift = reconciler.run(body("STOPPED", settled, b["metadata"]["uid"], 2))
    assert [e[1] for e in drift.events] == ["StartedBehindOurBack"]
    assert api.get_instance_deployment(settled["deploymentId"]).status == "STOPPED"


def created_then_recreated(
        world: tuple[Reconciler, WMLClient, DictSecrets]) -> tuple[dict[str, Any], dict[str, Any], Outcome]:
    """A resource created, then re-created by a rotation of its Kafka password: (body, status before the
    re-create, the re-create's outcome)."""
    reconciler, _, secrets = world
    b = body()
    status = reconciler.run(b).status
    secrets.data["kafka"]["password"] = "rotated"
    changed = reconciler.run({**b, "status": status})
    assert changed.status["deploymentId"] != status["deploymentId"]
    return b, status, changed


def test_recreate_on_change_and_404(world: tuple[Reconciler, WMLClient, DictSecrets]) -> None:
    reconciler, api, _ = world
    b, _, changed = created_then_recreated(world)
    assert changed.events[0][1] == "SpecChanged"
    assert [d.id for d in api.list_instance_deployments()] == [changed.status["deploymentId"]]

    api.delete_instance_deployment(changed.status["deploymentId"])
    again = reconciler.run({**b, "status": changed.status})
    assert again.events[0][1] == "DeletedBehindOurBack"
    assert [d.id for d in api.list_instance_deployments()] == [again.status["deploymentId"]]

    gone = reconciler.run({**b, "status": again.status}, deleting=True)
    assert gone.finalized
    assert api.list_instance_deployments() == []
    assert reconciler.run({**b, "status": again.status}, deleting=True).finalized  # 404 counts as done


def test_a_recreate_whose_status_write_was_lost_is_not_done_twice(
        world: tuple[Reconciler, WMLClient, DictSecrets]) -> None:
    """kill -9 between a re-create and its status write: the next pass finds the new deployment by its marker,
    which says what spec it was made from, and keeps it instead of re-creating it again (and restarting its
    stream for nothing)."""
    reconciler, api, _ = world
    b, status, changed = created_then_recreated(world)
    new = changed.status["deploymentId"]
    after_crash = reconciler.run({**b, "status": status})  # the status from before the re-create
    assert [e[1] for e in after_crash.events] == []
    assert [d.id for d in api.list_instance_deployments()] == [new]
    assert (after_crash.status["deploymentId"], after_crash.status["specHash"]) == (new, changed.status["specHash"])
    assert after_crash.status["specHash"] != status["specHash"]


def test_unknown_model_stalls_without_retrying(world: tuple[Reconciler, WMLClient, DictSecrets]) -> None:
    reconciler, api, _ = world
    b = body()
    b["spec"]["modelId"] = str(uuid.uuid4())
    outcome = reconciler.run(b)
    stalled = next(c for c in outcome.status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "ModelNotFound"
    assert "spec.modelId" in stalled["message"]
    assert api.list_instance_deployments() == []


def test_wml_down_is_transient_with_backoff(wml_user: WMLUser) -> None:
    dead = f"http://127.0.0.1:{process.free_port()}"
    reconciler = reconciler_for(secrets_for(dead, wml_user))
    b = body()
    delays = []
    for _ in range(3):
        outcome = reconciler.run(b)
        assert outcome.retry_after is not None
        delays.append(outcome.retry_after)
        assert wml_user.password not in json.dumps(outcome.status)
        assert outcome.events == []
    assert delays[0] < delays[2]  # exponential (with jitter)
    reconciling = next(c for c in outcome.status["conditions"] if c["type"] == "Reconciling")
    assert reconciling["reason"] == "WMLUnavailable"


def test_rate_limits_are_honoured(wml_user: WMLUser) -> None:
    """A 429 with Retry-After from a real HTTP server on loopback: the next attempt waits at least that long."""
    class Limited(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/v3/identity/token"):
                payload = json.dumps({"token": "a.b.c"}).encode()
                self.send_response(200)
            else:
                payload = json.dumps({"trace": "t", "errors": [{"code": "rate_limit_exceeded",
                                                                 "message": "slow down"}]}).encode()
                self.send_response(429)
                self.send_header("Retry-After", "42")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Limited)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        reconciler = reconciler_for(secrets_for(url, wml_user))
        outcome = reconciler.run(body())
        assert outcome.retry_after is not None
        assert outcome.retry_after >= 42
        reconciling = next(c for c in outcome.status["conditions"] if c["type"] == "Reconciling")
        assert "rate_limit_exceeded" in reconciling["message"]
    finally:
        server.shutdown()
        server.server_close()


def test_one_list_call_serves_every_resource_of_an_instance(world: tuple[Reconciler, WMLClient, DictSecrets]) -> None:
    _, _, secrets = world
    wml = Instances()
    reconciler = Reconciler(secrets, wml, Resources(30.0, 30.0), Defaults())
    bodies = [body() for _ in range(4)]
    statuses = [reconciler.run(b).status for b in bodies]  # new resources share one list
    before = wml.cache.list_calls
    for b, status in zip(bodies, statuses, strict=True):
        reconciler.run({**b, "status": status})
    assert wml.cache.list_calls - before <= 1
