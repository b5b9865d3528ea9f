"""Through the service's API: a deployment created over HTTP really scores records; FAILED shows WML's reason;
/metrics counts per deployment."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable

import requests
from confluent_kafka import Consumer, Producer

from tests.conftest import wml_groups
from tests.integration.test_wml_service_api import MODEL, spark
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_api.models import DeploymentCreate, KafkaConnection, StreamInput, StreamOutput
from wml_localplatform import KafkaInfo
from wml_localplatform.wmlservice import WMLService


def _deploy(api: WMLClient, kafka: KafkaInfo, source: str, target: str, password: str | None = None) -> str:
    user = kafka.users[-1]
    conn = KafkaConnection(kafka_brokers_sasl=[kafka.bootstrap], user=user.name, password=password or user.password,
                           security_protocol="SASL_PLAINTEXT")
    return api.create_deployment(MODEL, DeploymentCreate(
        name="s", input=StreamInput(connection=conn, source={"topic": source}),
        output=StreamOutput(connection=conn, target={"topic": target})), spark()).id


def _wait_status(api: WMLClient, did: str, status: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (current := api.get_instance_deployment(did).status) != status:
        assert time.monotonic() < deadline, f"still {current}, wanted {status}"
        time.sleep(0.3)


def test_records_scored_through_the_api_and_counted(wml_service: WMLService, kafka: KafkaInfo,
                                                    kafka_topic: Callable[..., str]) -> None:
    user = wml_service.add_user()
    api = WMLClient(wml_service.url, WMLCredentials(user.username, user.password), user.instance_id)
    source, target = kafka_topic("in"), kafka_topic("out")
    did = _deploy(api, kafka, source, target)
    _wait_status(api, did, "RUNNING")
    producer = Producer(kafka.client_config())
    for i in range(10):
        producer.produce(source, json.dumps({"text": f"happy day {i}"}).encode(), str(i).encode())
    producer.produce(source, b"\x00not json", b"bad")
    assert producer.flush(30) == 0
    consumer = Consumer(kafka.client_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                                               "isolation.level": "read_committed"}))
    consumer.subscribe([target])
    seen: dict[bytes, dict[str, object]] = {}
    deadline = time.monotonic() + 60
    while len(seen) < 11 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            seen[msg.key()] = json.loads(msg.value())
    consumer.close()
    assert len(seen) == 11
    assert seen[b"3"]["prediction"] == "POSITIVE"
    assert seen[b"3"]["text"] == "happy day 3"
    assert seen[b"bad"]["error"] == "invalid_json"

    metrics = requests.get(f"{wml_service.url}/metrics", timeout=10).text
    assert f'wml_stream_records_in_total{{deployment_id="{did}"}} 11.0' in metrics
    assert f'wml_stream_records_errored_total{{deployment_id="{did}"}} 1.0' in metrics
    assert "wml_stream_scoring_seconds_bucket" in metrics
    api.delete_instance_deployment(did)


def test_wrong_kafka_password_fails_with_the_reason(wml_service: WMLService, kafka: KafkaInfo,
                                                    kafka_topic: Callable[..., str]) -> None:
    user = wml_service.add_user()
    api = WMLClient(wml_service.url, WMLCredentials(user.username, user.password), user.instance_id)
    did = _deploy(api, kafka, kafka_topic("in"), kafka_topic("out"), password="wrong-" + uuid.uuid4().hex)
    _wait_status(api, did, "FAILED")
    dep = api.get_instance_deployment(did)
    assert dep.entity.status_details is not None
    assert dep.failure_message
    assert "authentication" in dep.failure_message.lower()
    assert "wrong-" not in dep.model_dump_json()
    api.delete_instance_deployment(did)


def test_kill_9_of_the_service_mid_stream_loses_and_repeats_nothing(
        make_wml_service: Callable[..., WMLService], kafka: KafkaInfo, kafka_topic: Callable[..., str]) -> None:
    service = make_wml_service()
    user = service.add_user()
    api = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)
    source, target = kafka_topic("in"), kafka_topic("out")
    did = _deploy(api, kafka, source, target)
    _wait_status(api, did, "RUNNING")
    total = 3000

    def produce_slowly() -> None:
        producer = Producer(kafka.client_config())
        for i in range(total):
            producer.produce(source, json.dumps({"tweet": f"good {i}"}).encode(), str(i).encode())
            if i % 100 == 0:
                producer.flush(10)
                time.sleep(0.05)
        producer.flush(30)

    sender = threading.Thread(target=produce_slowly)
    sender.start()
    time.sleep(0.8)  # records are flowing
    service.kill()
    sender.join(60)
    service.start()  # the deployment was RUNNING: it resumes by itself
    _wait_status(api, did, "RUNNING")

    consumer = Consumer(kafka.client_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                                               "isolation.level": "read_committed"}))
    consumer.subscribe([target])
    counts: dict[bytes, int] = {}
    deadline = time.monotonic() + 90
    while len(counts) < total and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            counts[msg.key()] = counts.get(msg.key(), 0) + 1
    quiet_until = time.monotonic() + 2  # anything more would be a duplicate
    while time.monotonic() < quiet_until:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            counts[msg.key()] = counts.get(msg.key(), 0) + 1
    consumer.close()
    assert len(counts) == total, f"{total - len(counts)} records lost"
    assert max(counts.values()) == 1, "a record was scored twice"
    api.delete_instance_deployment(did)  # and its consumer group, which the session checks is gone


def _pending_cleanups(service: WMLService) -> set[str]:
    """The deleted deployments whose cleanup the database still holds (ids only: the rest is encrypted)."""
    conn = sqlite3.connect(f"file:{service.data_dir / 'wml.sqlite3'}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM cleanups")}
    finally:
        conn.close()


def test_kill_9_right_after_a_delete_still_deletes_the_group(
        make_wml_service: Callable[..., WMLService], kafka: KafkaInfo, kafka_topic: Callable[..., str]) -> None:
    """The group is deleted in the background after the 204: a service killed before that deletes it after its
    restart, from the cleanup row its delete wrote."""
    service = make_wml_service()
    user = service.add_user()
    api = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)
    producer = Producer(kafka.client_config())
    hit = None
    for _ in range(3):  # the kill must land before the cleanup's end: a fast one is tried again
        source = kafka_topic("in")
        did = _deploy(api, kafka, source, kafka_topic("out"))
        _wait_status(api, did, "RUNNING")
        for i in range(200):  # records flowing: the runner has a transaction to finish after the delete
            producer.produce(source, json.dumps({"tweet": f"good {i}"}).encode())
        producer.flush(10)
        time.sleep(0.5)
        assert f"wml-{did}" in wml_groups(kafka)
        api.delete_instance_deployment(did)
        service.kill()
        if did in _pending_cleanups(service):
            hit = did
            break
        assert f"wml-{did}" not in wml_groups(kafka), "the cleanup row went before the group"
    assert hit is not None, "each kill came after the cleanup: the case was not tried"

    service.start()
    deadline = time.monotonic() + 60
    while f"wml-{hit}" in wml_groups(kafka) or hit in _pending_cleanups(service):
        assert time.monotonic() < deadline, "the restarted service did not finish the deleted deployment's cleanup"
        time.sleep(0.5)
    assert hit not in {d.id for d in api.list_instance_deployments()}
