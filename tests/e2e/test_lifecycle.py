"""The seed's scenario through the operator: create -> RUNNING with records scored, stop, start, delete."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer
from kubernetes import client as k8s

from tests.e2e.conftest import OperatorProcess, StreamEnv, audit_trail, wait_for
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials

TWEETS = ["I love this phone, best purchase ever", "This is the worst service I have ever had",
          "What a wonderful day", "I hate waiting in line", "Great news for everyone!", "Terrible, awful, bad"]


def produce(env: StreamEnv, keys: list[str]) -> None:
    producer = Producer(env.kafka.client_config())
    for i, key in enumerate(keys):
        producer.produce(env.input_topic, json.dumps({"tweet": TWEETS[i % len(TWEETS)], "id": key}).encode(),
                         key.encode())
    assert producer.flush(30) == 0


class Output:
    """Reads the output topic as a read_committed consumer and counts records per key."""

    def __init__(self, env: StreamEnv) -> None:
        self.consumer = Consumer(env.kafka.client_config(**{
            "group.id": f"e2e-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
            "isolation.level": "read_committed", "enable.auto.commit": False}))
        self.consumer.subscribe([env.output_topic])
        self.by_key: dict[str, int] = {}
        self.records: list[dict[str, Any]] = []

    def drain(self, seconds: float = 1.0) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            key = msg.key().decode()
            self.by_key[key] = self.by_key.get(key, 0) + 1
            self.records.append(json.loads(msg.value()))
        return len(self.records)

    def close(self) -> None:
        self.consumer.close()


def sdep(k8s_api: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = k8s.CustomObjectsApi(k8s_api).get_namespaced_custom_object(
        "wmlstream.dev", "v1alpha1", namespace, "streamingdeployments", name)
    return obj


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def test_seed_scenario(stream_env: StreamEnv, operator: OperatorProcess, kubectl: Callable[..., Any],
                       k8s_api: k8s.ApiClient) -> None:
    env, ns = stream_env, stream_env.namespace
    kubectl("apply", "-f", "-", input=env.manifest())
    waited = kubectl("wait", "--for=condition=Ready", "--timeout=120s", "-n", ns, "sdep/tweets", check=False)
    assert waited.returncode == 0, f"{waited.stderr}\n{operator.text()[-3000:]}"
    obj = sdep(k8s_api, ns, "tweets")
    status = obj["status"]
    assert status["wmlStatus"] == "RUNNING"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    deployment_id = status["deploymentId"]
    assert status["deploymentUrl"].endswith(f"/deployments/{deployment_id}")
    assert "wmlstream.dev/finalizer" in obj["metadata"]["finalizers"]
    text = json.dumps(obj)
    assert env.user.password not in text

    table = kubectl("get", "sdep", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "STATUS", "READY", "REASON", "AGE"]
    assert table[1].split()[:5] == ["tweets", "RUNNING", "RUNNING", "True", "Running"]
    wide = kubectl("get", "sdep", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-3:] == ["DEPLOYMENT", "MODEL", "LAG"]
    assert deployment_id in wide[1]

    out = Output(env)
    try:
        produce(env, [f"a{i}" for i in range(40)])
        wait_for("40 scored records", lambda: out.drain() >= 40)
        assert {r["prediction"] for r in out.records} <= {"POSITIVE", "NEGATIVE"}
        assert len({r["prediction"] for r in out.records}) == 2

        kubectl("patch", "sdep", "tweets", "-n", ns, "--type=merge", "-p", '{"spec": {"state": "STOPPED"}}')
        wait_for("STOPPED and Ready", lambda: (sdep(k8s_api, ns, "tweets")["status"].get("wmlStatus") == "STOPPED"
                                               and (condition(sdep(k8s_api, ns, "tweets"), "Ready") or {}).get(
                                                   "status") == "True"))
        produce(env, [f"b{i}" for i in range(20)])
        out.drain(3.0)
        assert not any(k.startswith("b") for k in out.by_key), "records were scored while STOPPED"

        kubectl("patch", "sdep", "tweets", "-n", ns, "--type=merge", "-p", '{"spec": {"state": "RUNNING"}}')
        kubectl("wait", "--for=jsonpath={.status.wmlStatus}=RUNNING", "--timeout=60s", "-n", ns, "sdep/tweets")
        wait_for("the 20 records sent while stopped", lambda: out.drain() >= 60)
        out.drain(2.0)
        assert sorted(out.by_key) == sorted([f"a{i}" for i in range(40)] + [f"b{i}" for i in range(20)])
        assert set(out.by_key.values()) == {1}, "a record was scored twice"
    finally:
        out.close()

    api = WMLClient(env.service.url, WMLCredentials(env.user.username, env.user.password), env.user.instance_id)
    assert [d.id for d in api.list_instance_deployments()] == [deployment_id]
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")
    assert api.list_instance_deployments() == []
    events = kubectl("get", "events", "-n", ns, "-o", "json").stdout
    assert env.user.password not in events

    # The WML service's audit trail, read back (issue 21): the user added, the operator's tokens, and the
    # deployment created, stopped, started and deleted by the operator, once each, in that order.
    trail = audit_trail(env, k8s_api)
    assert ("user.added", env.user.username) in [(r["event"], r.get("username")) for r in trail]
    assert any(r["event"] == "token.issued" and r["user"] == env.user.username for r in trail)
    changes = [(r["event"], r.get("state")) for r in trail if r.get("deployment_id") == deployment_id]
    assert changes[0] == ("deployment.created", "RUNNING"), changes
    assert changes[-1] == ("deployment.deleted", None), changes
    assert [c for c in changes if c[0] == "deployment.patched"] == [("deployment.patched", "STOPPED"),
                                                                    ("deployment.patched", "RUNNING")], changes
    assert len(changes) == 4, changes
    assert all(r["user"] == env.user.username for r in trail if r["event"].startswith("deployment."))


def test_operator_logs_are_json_lines_without_secrets(stream_env: StreamEnv, operator: OperatorProcess,
                                                      kubectl: Callable[..., Any]) -> None:
    kubectl("apply", "-f", "-", input=stream_env.manifest())
    kubectl("wait", "--for=condition=Ready", "--timeout=120s", "-n", stream_env.namespace, "sdep/tweets")
    kubectl("delete", "sdep", "tweets", "-n", stream_env.namespace, "--timeout=60s")
    text = operator.text()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]  # WML_OPERATOR_LOG_FORMAT=json
    assert any("Handler 'reconcile' succeeded" in str(r.get("message")) for r in records)
    for secret in (stream_env.user.password, *(u.password for u in stream_env.kafka.users)):
        assert secret not in text
