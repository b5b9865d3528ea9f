"""spec.output.deadLetterTopic through the whole chain: kubectl -> operator -> WML service -> Kafka. Records that
cannot be scored land in the dead-letter topic, the others in the output topic, each exactly once; the API server
refuses a dead-letter topic that is the output topic."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer
from kubernetes import client as k8s

from tests.e2e.conftest import OperatorProcess, StreamEnv, wait_for
from tests.e2e.test_lifecycle import condition, sdep
from tests.integration.test_wml_service_dead_letter import read_committed
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials


def read_both(env: StreamEnv, topics: list[str], total: int) -> list[Any]:
    return read_committed(env.kafka, topics, total)


def test_bad_records_go_to_the_dead_letter_topic(stream_env: StreamEnv, operator: OperatorProcess,
                                                 kubectl: Callable[..., Any], k8s_api: k8s.ApiClient,
                                                 kafka_topic: Callable[..., str]) -> None:
    env, ns = stream_env, stream_env.namespace
    output = {"topic": env.output_topic, "connectionSecretRef": {"name": "kafka"}}

    same = kubectl("apply", "-f", "-", input=env.manifest(output={**output, "deadLetterTopic": env.output_topic}),
                   check=False)
    assert same.returncode != 0
    assert "deadLetterTopic must be another topic than the output topic" in same.stderr

    dead = kafka_topic("dlq")
    kubectl("apply", "-f", "-", input=env.manifest(output={**output, "deadLetterTopic": dead}))
    waited = kubectl("wait", "--for=condition=Ready", "--timeout=120s", "-n", ns, "sdep/tweets", check=False)
    assert waited.returncode == 0, f"{waited.stderr}\n{operator.text()[-3000:]}"
    obj = sdep(k8s_api, ns, "tweets")
    assert condition(obj, "Stalled") is None
    api = WMLClient(env.service.url, WMLCredentials(env.user.username, env.user.password), env.user.instance_id)
    deployment = api.get_instance_deployment(obj["status"]["deploymentId"])
    assert deployment.entity.output is not None
    assert deployment.entity.output.target.dead_letter_topic == dead

    bad = {"b0": b"\x00not json", "b1": b"[1, 2, 3]", "b2": json.dumps({"id": "b2"}).encode()}
    good = {f"g{i}": json.dumps({"tweet": f"What a wonderful day {i}"}).encode() for i in range(20)}
    producer = Producer(env.kafka.client_config())
    for key, value in [*good.items(), *bad.items()]:
        producer.produce(env.input_topic, value, key.encode())
    assert producer.flush(30) == 0

    messages = read_both(env, [env.output_topic, dead], len(good) + len(bad))
    where = [(m.topic(), m.key().decode()) for m in messages]
    assert sorted(k for _, k in where) == sorted([*good, *bad]), "a record lost or written twice"
    assert {k for t, k in where if t == env.output_topic} == set(good)
    assert {k for t, k in where if t == dead} == set(bad)
    errors = {m.key().decode(): json.loads(m.value())["error"] for m in messages if m.topic() == dead}
    assert errors == {"b0": "invalid_json", "b1": "not_an_object", "b2": "missing_text"}

    # Another dead-letter topic re-creates the deployment, handing its position over: nothing read again.
    first = obj["status"]["deploymentId"]
    dead2 = kafka_topic("dlq2")
    kubectl("patch", "sdep", "tweets", "-n", ns, "--type=merge", "-p",
            json.dumps({"spec": {"output": {"deadLetterTopic": dead2}}}))
    wait_for("the hand-over to a new deployment", lambda: (
        (o := sdep(k8s_api, ns, "tweets"))["status"].get("deploymentId") not in (None, first)
        and (condition(o, "Ready") or {}).get("status") == "True"))
    assert "handed over from deployment" in sdep(k8s_api, ns, "tweets")["status"]["handOver"]
    more_bad = {"c0": b"{not json", "c1": b"42"}
    more_good = {f"h{i}": json.dumps({"tweet": f"I hate waiting {i}"}).encode() for i in range(5)}
    for key, value in [*more_good.items(), *more_bad.items()]:
        producer.produce(env.input_topic, value, key.encode())
    assert producer.flush(30) == 0
    total = len(good) + len(bad) + len(more_good) + len(more_bad)
    messages = read_both(env, [env.output_topic, dead, dead2], total)
    where = [(m.topic(), m.key().decode()) for m in messages]
    assert sorted(k for _, k in where) == sorted([*good, *bad, *more_good, *more_bad]), "lost or repeated"
    assert {k for t, k in where if t == env.output_topic} == {*good, *more_good}
    assert {k for t, k in where if t == dead} == set(bad)
    assert {k for t, k in where if t == dead2} == set(more_bad)

    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")
    wait_for("the deployment deleted", lambda: api.list_instance_deployments() == [])
