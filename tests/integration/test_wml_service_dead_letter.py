"""The dead-letter topic (extension EXT_DEAD_LETTER_TOPIC) on a real broker, through the service's API: records that
cannot be scored go there instead of the output topic, in the same transactions, so that every input record ends
up exactly once in exactly one of the two topics, across STOP/RUN and a kill -9 of the service too."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from confluent_kafka import Consumer, Producer

from tests.integration.test_wml_service_api import MODEL, error_code, raw, spark
from wml_api import errors as wml_errors
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_api.models import (
    EXT_DEAD_LETTER_TOPIC,
    DeploymentCreate,
    KafkaConnection,
    KafkaSource,
    KafkaTarget,
    StreamInput,
    StreamOutput,
)
from wml_localplatform import KafkaInfo
from wml_localplatform.wmlservice import WMLService, WMLUser

PARTITIONS = 3
BAD = {  # every third record is one of these, by n % 9
    0: lambda n: b"\x00not json " + str(n).encode(),  # invalid_json
    3: lambda n: json.dumps([n]).encode(),  # not_an_object
    6: lambda n: json.dumps({"n": n, "message": "no text field"}).encode(),  # missing_text
}
CODES = {0: "invalid_json", 3: "not_an_object", 6: "missing_text"}


def value_of(n: int) -> bytes:
    bad = BAD.get(n % 9)
    return bad(n) if bad else json.dumps({"n": n, "tweet": f"I love day {n}"}).encode()


def is_bad(n: int) -> bool:
    return n % 9 in BAD


def connection(kafka: KafkaInfo) -> KafkaConnection:
    user = kafka.users[-1]
    return KafkaConnection(kafka_brokers_sasl=[kafka.bootstrap], user=user.name, password=user.password,
                           security_protocol="SASL_PLAINTEXT")


def create_body(kafka: KafkaInfo, source: str, target: str, dead: str | None) -> DeploymentCreate:
    conn = connection(kafka)
    return DeploymentCreate(name="dlq", input=StreamInput(connection=conn, source=KafkaSource(topic=source)),
                            output=StreamOutput(connection=conn,
                                                target=KafkaTarget(topic=target, dead_letter_topic=dead)))


def client(service: WMLService) -> tuple[WMLClient, WMLUser]:
    user = service.add_user()
    return WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id), user


def wait_status(api: WMLClient, did: str, status: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (current := api.get_instance_deployment(did).status) != status:
        assert time.monotonic() < deadline, f"still {current}, wanted {status}"
        time.sleep(0.2)


def produce(kafka: KafkaInfo, topic: str, first: int, count: int, pause_every: int = 0) -> None:
    producer = Producer(kafka.client_config(None, **{"linger.ms": 5}))
    for n in range(first, first + count):
        producer.produce(topic, value_of(n), key=str(n).encode(), partition=n % PARTITIONS)
        producer.poll(0)
        if pause_every and n % pause_every == 0:
            producer.flush(10)
            time.sleep(0.05)
    assert producer.flush(30) == 0


def read_committed(kafka: KafkaInfo, topics: list[str], total: int, timeout: float = 90) -> list[Any]:
    """Every record of `topics` (read_committed) until `total` arrived and 2 s more passed without one."""
    consumer = Consumer(kafka.client_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                                               "isolation.level": "read_committed"}))
    consumer.subscribe(topics)
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                seen.append(msg)
                quiet_until = None
            elif len(seen) >= total:
                quiet_until = quiet_until or time.monotonic() + 2  # anything more would be a duplicate
                if time.monotonic() >= quiet_until:
                    break
    finally:
        consumer.close()
    return seen


def check_exactly_once(messages: list[Any], target: str, dead: str, source: str, total: int) -> None:
    """Each input record once, in exactly one topic: good ones in the output (in input order per input
    partition), bad ones in the dead-letter topic with their error and where they came from."""
    keys = [int(m.key()) for m in messages]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    assert not repeated, f"records written twice: {repeated[:10]}"
    assert sorted(keys) == list(range(total)), f"{total - len(set(keys))} records lost"
    out = [m for m in messages if m.topic() == target]
    dlq = [m for m in messages if m.topic() == dead]
    assert len(out) + len(dlq) == total
    assert all(not is_bad(int(m.key())) for m in out), "a bad record went to the output topic"
    assert all(is_bad(int(m.key())) for m in dlq), "a good record went to the dead-letter topic"
    assert all("prediction" in json.loads(m.value()) for m in out)
    for m in dlq:
        n = int(m.key())
        assert json.loads(m.value())["error"] == CODES[n % 9]
        headers = dict(m.headers() or [])
        assert headers["wml.source.topic"] == source.encode()
        assert headers["wml.source.partition"] == str(n % PARTITIONS).encode()
        assert int(headers["wml.source.offset"]) >= 0
    for partition in range(PARTITIONS):  # the output topic has one partition: its order is the produce order
        ns = [int(m.key()) for m in out if int(m.key()) % PARTITIONS == partition]
        assert ns == sorted(ns), f"output order of input partition {partition} not kept"


def test_bad_records_go_only_to_the_dead_letter_topic_exactly_once(
        wml_service: WMLService, kafka: KafkaInfo, kafka_topic: Callable[..., str]) -> None:
    api, _ = client(wml_service)
    assert EXT_DEAD_LETTER_TOPIC in api.get_instance().entity.extensions
    source, target, dead = kafka_topic("in", PARTITIONS), kafka_topic("out"), kafka_topic("dlq")
    body = create_body(kafka, source, target, dead)
    report = api.check_deployment(MODEL, body, spark())
    assert f"kafka dead-letter: topic '{dead}' exists" in report.checked
    did = api.create_deployment(MODEL, body, spark()).id
    stored = api.get_instance_deployment(did).entity.output
    assert stored is not None
    assert stored.target.dead_letter_topic == dead
    wait_status(api, did, "RUNNING")
    total = 300
    produce(kafka, source, 0, total)
    messages = read_committed(kafka, [target, dead], total)
    check_exactly_once(messages, target, dead, source, total)
    bad = sum(is_bad(n) for n in range(total))
    metrics = requests.get(f"{wml_service.url}/metrics", timeout=10).text
    assert f'wml_stream_records_dead_lettered_total{{deployment_id="{did}"}} {float(bad)}' in metrics
    assert f'wml_stream_records_errored_total{{deployment_id="{did}"}} {float(bad)}' in metrics
    api.delete_instance_deployment(did)


def test_across_stop_run_and_a_kill_9_nothing_is_lost_or_repeated_over_both_topics(
        make_wml_service: Callable[..., WMLService], kafka: KafkaInfo, kafka_topic: Callable[..., str]) -> None:
    service = make_wml_service(WML_SERVER_KAFKA_UNREACHABLE_TIMEOUT="15")
    api, _ = client(service)
    source, target, dead = kafka_topic("in", PARTITIONS), kafka_topic("out"), kafka_topic("dlq")
    did = api.create_deployment(MODEL, create_body(kafka, source, target, dead), spark()).id
    wait_status(api, did, "RUNNING")
    total = 3000
    sender = threading.Thread(target=produce, args=(kafka, source, 0, total, 100))
    sender.start()
    time.sleep(0.8)  # records are flowing
    api.set_deployment_status(MODEL, did, "STOPPED", spark())
    wait_status(api, did, "STOPPED")
    time.sleep(0.3)
    api.set_deployment_status(MODEL, did, "RUNNING", spark())
    wait_status(api, did, "RUNNING")
    time.sleep(0.5)
    service.kill()  # mid-transaction, most likely: the next run's fencing aborts it
    service.start()  # the deployment was RUNNING: it resumes by itself
    sender.join(120)
    assert not sender.is_alive()
    wait_status(api, did, "RUNNING")
    messages = read_committed(kafka, [target, dead], total, timeout=120)
    check_exactly_once(messages, target, dead, source, total)
    api.delete_instance_deployment(did)


def test_a_missing_dead_letter_topic_fails_the_dry_run_and_the_stream_naming_it(
        wml_service: WMLService, kafka: KafkaInfo, kafka_topic: Callable[..., str]) -> None:
    api, _ = client(wml_service)
    source, target = kafka_topic("in"), kafka_topic("out")
    missing = f"no-such-dlq-{uuid.uuid4().hex[:8]}"
    body = create_body(kafka, source, target, missing)
    with pytest.raises(wml_errors.WMLError) as refused:
        api.check_deployment(MODEL, body, spark())
    assert refused.value.status == 400
    assert refused.value.code == "kafka_unknown_topic"
    assert f"dead-letter topic '{missing}'" in str(refused.value)
    did = api.create_deployment(MODEL, body, spark()).id
    wait_status(api, did, "FAILED")
    failed = api.get_instance_deployment(did)
    assert failed.entity.status_details is not None
    assert failed.entity.status_details.failure is not None
    assert failed.entity.status_details.failure.errors[0].code == "kafka_unknown_topic"
    assert f"dead-letter topic '{missing}'" in (failed.failure_message or "")
    api.delete_instance_deployment(did)


@pytest.mark.parametrize(("dead", "says"), [
    ("", "output.target.dead_letter_topic: String should have at least 1 character"),
    ("scores", "another topic than the output topic 'scores'"),
])
def test_an_empty_or_the_output_s_own_dead_letter_topic_is_refused(wml_service: WMLService, kafka: KafkaInfo,
                                                                    dead: str, says: str) -> None:
    user = wml_service.add_user()
    payload = create_body(kafka, "tweets", "scores", None).model_dump(mode="json", exclude_none=True)
    payload["output"]["target"]["dead_letter_topic"] = dead
    path = f"/v3/wml_instances/{user.instance_id}/published_models/{MODEL}/deployments"
    for query in ("", "?dry_run=true"):
        resp = raw(wml_service, user, "POST", path + query, json=payload,
                   headers={"X-Spark-Service-Instance": spark().to_header()})
        assert resp.status_code == 400, resp.text
        assert error_code(resp) == "invalid_request"
        assert says in resp.json()["errors"][0]["message"]
