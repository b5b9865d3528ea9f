"""Issue 14's extensions against real Kafka and the real service: a deployment created STOPPED, starting
offsets, the position handed over from one deployment to its replacement (each record exactly once), lag,
the dry run, and nothing left on the broker after a delete."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from tests.integration.test_wml_service_api import MODEL, spark
from wml_api import errors as E
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_api.models import EXTENSIONS, Deployment, DeploymentCreate, KafkaConnection, StreamInput, StreamOutput
from wml_localplatform import KafkaInfo
from wml_localplatform.wmlservice import WMLService, WMLUser

pytestmark = pytest.mark.integration


def _client(service: WMLService) -> WMLClient:
    user = service.add_user()
    return WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)


def _body(kafka: KafkaInfo, source: str, target: str, *, password: str | None = None,
          initial_status: str | None = None, **start: Any) -> DeploymentCreate:
    user = kafka.users[-1]
    conn = KafkaConnection(kafka_brokers_sasl=[kafka.bootstrap], user=user.name, password=password or user.password,
                           security_protocol="SASL_PLAINTEXT")
    return DeploymentCreate(name="handover", input=StreamInput(connection=conn, source={"topic": source, **start}),
                            output=StreamOutput(connection=conn, target={"topic": target}),
                            initial_status=initial_status)


def _wait(api: WMLClient, did: str, done: Callable[[Deployment], bool], timeout: float = 60) -> Deployment:
    deadline = time.monotonic() + timeout
    while not done(dep := api.get_instance_deployment(did)):
        assert time.monotonic() < deadline, f"not reached in time: {dep.entity.status} {dep.entity.status_details}"
        time.sleep(0.3)
    return dep


def _status(status: str) -> Callable[[Deployment], bool]:
    return lambda dep: dep.status == status


def _produce(kafka: KafkaInfo, topic: str, keys: range) -> None:
    producer = Producer(kafka.client_config())
    for i in keys:
        producer.produce(topic, json.dumps({"tweet": f"good day {i}"}).encode(), str(i).encode())
    assert producer.flush(30) == 0


def _read(kafka: KafkaInfo, topic: str, expect: int, quiet: float = 3.0, timeout: float = 60) -> list[bytes]:
    """Every key on `topic` (read_committed): until `expect` came and then nothing more for `quiet` s."""
    consumer = Consumer(kafka.client_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                                               "isolation.level": "read_committed"}))
    consumer.subscribe([topic])
    keys: list[bytes] = []
    deadline, quiet_until = time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
            msg = consumer.poll(0.3)
            if msg is not None and not msg.error():
                keys.append(msg.key())
            if len(keys) >= expect and quiet_until is None:
                quiet_until = time.monotonic() + quiet
    finally:
        consumer.close()
    return keys


def _groups(kafka: KafkaInfo) -> set[str]:
    admin = AdminClient(kafka.client_config())
    return {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result().valid}


def test_created_stopped_runs_nothing_until_started_then_scores_all_and_lag_settles(
        wml_service: WMLService, kafka: KafkaInfo, kafka_topic: Callable[..., str]) -> None:
    api = _client(wml_service)
    source, target = kafka_topic("in"), kafka_topic("out")
    created = api.create_deployment(MODEL, _body(kafka, source, target, initial_status="STOPPED"), spark())
    assert created.status == "STOPPED"
    _produce(kafka, source, range(5))
    time.sleep(2)
    assert api.get_instance_deployment(created.id).status == "STOPPED"
    assert _read(kafka, target, expect=1, quiet=0, timeout=3) == []
    assert f"wml-{created.id}" not in _groups(kafka)  # no consumer ever made

    api.set_deployment_status(MODEL, created.id, "RUNNING", spark())
    running = _wait(api, created.id, _status("RUNNING"))
    assert running.entity.status_details is not None
    assert running.entity.status_details.lag is not None  # measured at connect
    assert sorted(_read(kafka, target, expect=5)) == sorted(str(i).encode() for i in range(5))
    settled = _wait(api, created.id, lambda d: d.entity.status_details is not None
                    and d.entity.status_details.lag == 0
                    and d.entity.status_details.position is not None
                    and d.entity.status_details.position.offsets == {"0": 5}, timeout=30)
    assert settled.entity.status_details is not None
    assert settled.entity.status_details.position is not None
    assert settled.entity.status_details.position.topic == source
    api.delete_instance_deployment(created.id)


def test_latest_skips_what_was_there_before_the_start(wml_service: WMLService, kafka: KafkaInfo,
                                                      kafka_topic: Callable[..., str]) -> None:
    api = _client(wml_service)
    source, target = kafka_topic("in"), kafka_topic("out")
    _produce(kafka, source, range(3))
    did = api.create_deployment(MODEL, _body(kafka, source, target, starting_offsets="latest"), spark()).id
    _wait(api, did, lambda d: d.status == "RUNNING" and d.entity.status_details is not None
          and d.entity.status_details.position is not None)
    _produce(kafka, source, range(3, 7))
    assert sorted(_read(kafka, target, expect=4)) == sorted(str(i).encode() for i in range(3, 7))
    api.delete_instance_deployment(did)


def test_a_replacement_takes_over_exactly_where_the_old_one_stopped_and_the_old_group_goes(
        wml_service: WMLService, kafka: KafkaInfo, kafka_topic: Callable[..., str]) -> None:
    api = _client(wml_service)
    source, target = kafka_topic("in", partitions=2), kafka_topic("out")
    n, m = 40, 25
    _produce(kafka, source, range(n))
    a = api.create_deployment(MODEL, _body(kafka, source, target), spark()).id
    assert len(_read(kafka, target, expect=n)) == n
    api.set_deployment_status(MODEL, a, "STOPPED", spark())
    stopped = _wait(api, a, _status("STOPPED"))
    assert stopped.entity.status_details is not None
    position = stopped.entity.status_details.position
    assert position is not None
    assert position.topic == source
    assert sum(position.offsets.values()) == n

    _produce(kafka, source, range(n, n + m))  # arrives while nothing runs
    b = api.create_deployment(MODEL, _body(kafka, source, target, start_position=position.offsets), spark()).id
    keys = _read(kafka, target, expect=n + m)
    assert sorted(keys) == sorted(str(i).encode() for i in range(n + m)), "lost or repeated across the hand-over"

    assert f"wml-{a}" in _groups(kafka)
    api.delete_instance_deployment(a)
    deadline = time.monotonic() + 30
    while f"wml-{a}" in _groups(kafka):
        assert time.monotonic() < deadline, "the deleted deployment's consumer group is still there"
        time.sleep(0.5)
    assert f"wml-{b}" in _groups(kafka)
    api.delete_deployment(MODEL, b)


def _dry_run(service: WMLService, user: WMLUser, model: str, body: dict[str, Any]) -> requests.Response:
    url = f"{service.url}/v3/wml_instances/{user.instance_id}/published_models/{model}/deployments"
    token = requests.get(f"{service.url}/v3/identity/token", auth=(user.username, user.password), timeout=10)
    return requests.post(url, params={"dry_run": "true"}, json=body, timeout=30, headers={
        "Authorization": f"Bearer {token.json()['token']}", "X-Spark-Service-Instance": spark().to_header()})


def test_dry_run_checks_everything_and_creates_nothing(wml_service: WMLService, kafka: KafkaInfo,
                                                       kafka_topic: Callable[..., str]) -> None:
    user = wml_service.add_user()
    api = WMLClient(wml_service.url, WMLCredentials(user.username, user.password), user.instance_id)
    source, target = kafka_topic("in"), kafka_topic("out")
    assert api.check_deployment(MODEL, _body(kafka, source, target), spark()).checked

    good = _body(kafka, source, target).model_dump(mode="json", exclude_none=True)
    with pytest.raises(E.NotFound):
        api.check_deployment(str(uuid.uuid4()), _body(kafka, source, target), spark())
    missing = _dry_run(wml_service, user, MODEL, {**good, "output": {**good["output"],
                                                                     "target": {"topic": "no-such-topic"}}})
    assert missing.status_code == 400, missing.text
    assert missing.json()["errors"][0]["code"] == "kafka_unknown_topic"
    assert "output topic 'no-such-topic'" in missing.json()["errors"][0]["message"]
    wrong = "wrong-" + uuid.uuid4().hex
    refused = _dry_run(wml_service, user, MODEL, _body(kafka, source, target, password=wrong).model_dump(
        mode="json", exclude_none=True))
    assert refused.status_code == 400, refused.text
    assert refused.json()["errors"][0]["code"] == "kafka_authentication_failed"
    assert wrong not in refused.text
    assert api.list_instance_deployments() == []  # created nothing
    assert api.get_instance().entity.extensions == list(EXTENSIONS)


def test_dry_run_says_unreachable_brokers_are_worth_a_retry(wml_service: WMLService, kafka: KafkaInfo,
                                                            kafka_topic: Callable[..., str]) -> None:
    user = wml_service.add_user()
    sent = _body(kafka, kafka_topic("in"), kafka_topic("out")).model_dump(mode="json", exclude_none=True)
    sent["input"]["connection"]["kafka_brokers_sasl"] = ["127.0.0.1:9"]  # nobody listens there
    started = time.monotonic()
    answer = _dry_run(wml_service, user, MODEL, sent)
    assert time.monotonic() - started < 15  # bounded: ~5 s a connection
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "10"
    assert answer.json()["errors"][0]["code"] == "kafka_unreachable"
    assert "input connection (brokers 127.0.0.1:9)" in answer.json()["errors"][0]["message"]


def test_the_final_position_survives_a_restart(make_wml_service: Callable[..., WMLService], kafka: KafkaInfo,
                                               kafka_topic: Callable[..., str]) -> None:
    service = make_wml_service(WML_SERVER_KAFKA_UNREACHABLE_TIMEOUT="15")
    api = _client(service)
    source, target = kafka_topic("in"), kafka_topic("out")
    _produce(kafka, source, range(8))
    did = api.create_deployment(MODEL, _body(kafka, source, target), spark()).id
    assert len(_read(kafka, target, expect=8)) == 8
    api.set_deployment_status(MODEL, did, "STOPPED", spark())
    _wait(api, did, _status("STOPPED"))
    service.stop()
    service.start()
    dep = api.get_instance_deployment(did)
    assert dep.status == "STOPPED"
    assert dep.entity.status_details is not None
    assert dep.entity.status_details.position is not None
    assert dep.entity.status_details.position.model_dump() == {"topic": source, "offsets": {"0": 8}}
    assert dep.entity.status_details.lag is None  # nothing measures it while stopped
    api.delete_instance_deployment(did)


def test_a_stop_cut_short_by_a_kill_reports_the_position_the_broker_committed(
        make_wml_service: Callable[..., WMLService], kafka: KafkaInfo, kafka_topic: Callable[..., str]) -> None:
    """The service is killed after a PATCH STOPPED was stored and before the stream's last status was: at the
    next start the deployment is STOPPED at the offsets its transactions committed, not at none (a replacement
    would read the topic again) nor at an older stored position."""
    service = make_wml_service(WML_SERVER_KAFKA_UNREACHABLE_TIMEOUT="15")
    api = _client(service)
    source, target = kafka_topic("in"), kafka_topic("out")
    _produce(kafka, source, range(12))
    did = api.create_deployment(MODEL, _body(kafka, source, target), spark()).id
    assert len(_read(kafka, target, expect=12)) == 12
    service.kill()
    with sqlite3.connect(service.dir / "data" / "wml.sqlite3") as db:  # what the PATCH had stored, no more
        db.execute("UPDATE deployments SET desired = 'STOPPED' WHERE id = ?", (did,))
    service.start()
    dep = api.get_instance_deployment(did)
    assert dep.status == "STOPPED"
    assert dep.entity.status_details is not None
    assert dep.entity.status_details.position is not None
    assert dep.entity.status_details.position.model_dump() == {"topic": source, "offsets": {"0": 12}}
    api.delete_instance_deployment(did)
