"""Streams on Spark through the service's API (issue 18): a deployment whose Spark credentials name an allowed
master runs as a Structured Streaming query in a driver process of its own, with our exactly-once sink.

One stream lives through every change a platform team makes to it, and every record is read back
read_committed, exactly once: a kill -9 of its driver mid-stream, a restart of the service (which re-attaches to
the running driver), a STOP and a RUN, a stop the service did not finish. Also: the allow-list, and a user's
scikit-learn model on Spark. (A Spark MLlib model is scored through the operator in
tests/e2e/test_spark_stream.py; its refusal by the built-in engine in tests/e2e/test_user_model.py.)
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from tests.conftest import plaintext_in_data_folders
from tests.integration.test_wml_repository_api import meta, pickled_tar_bytes
from tests.integration.test_wml_service_api import MODEL, SPARK_SECRET
from wml_api.client import WMLClient, WMLError
from wml_api.credentials import WMLCredentials
from wml_api.models import DeploymentCreate, KafkaConnection, KafkaTarget, StreamInput, StreamOutput
from wml_api.spark import SparkCredentials, SparkServiceInstance
from wml_localplatform import KafkaInfo, PlatformConfig
from wml_localplatform.wmlservice import WMLService

PARTITIONS = 2


def spark_header(master: str) -> SparkServiceInstance:
    return SparkServiceInstance(credentials=SparkCredentials(
        tenant_id="t", tenant_id_full="t-full", cluster_master_url=master, instance_id="i",
        tenant_secret=SPARK_SECRET, plan="ibm.SparkService.PayGoPersonal"))


def spark_env(master: str, config: PlatformConfig) -> dict[str, str]:
    return {"WML_SERVER_SPARK_MASTERS": master, "WML_SERVER_SPARK_JARS": str(config.spark_kafka_libs()),
            "WML_SERVER_SPARK_EXECUTOR_MEMORY": "768m",
            # C1 only: the JVMs start in about half the time (seen 17-27 s against 32-52 s for a job here).
            "WML_SERVER_SPARK_JAVA_OPTIONS": "-XX:TieredStopAtLevel=1"}


def stream(kafka: KafkaInfo, source: str, target: str, name: str = "on spark") -> DeploymentCreate:
    """A stream deployment's body on the run's broker, with the `wml` user's credentials."""
    wml = kafka.users[-1]
    conn = KafkaConnection(kafka_brokers_sasl=[kafka.bootstrap], user=wml.name, password=wml.password,
                           security_protocol="SASL_PLAINTEXT")
    return DeploymentCreate(name=name, input=StreamInput(connection=conn, source={"topic": source}),
                            output=StreamOutput(connection=conn, target={"topic": target}))


@pytest.fixture
def service_dir(tmp_path: Path) -> Path:
    return tmp_path / "wml"


def _status(api: WMLClient, did: str, wanted: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while (current := api.get_instance_deployment(did).status) != wanted:
        assert current != "FAILED" or wanted == "FAILED", api.get_instance_deployment(did).entity.status_details
        assert time.monotonic() < deadline, f"still {current}, wanted {wanted}"
        time.sleep(0.5)


def _produce(kafka: KafkaInfo, topic: str, start: int, count: int) -> None:
    producer = Producer(kafka.client_config())
    for i in range(start, start + count):
        producer.produce(topic, json.dumps({"id": i, "text": f"a lovely day {i}" if i % 3 else f"awful {i}"}).encode(),
                         str(i).encode())
    assert producer.flush(30) == 0


def _read_all(kafka: KafkaInfo, topic: str, expected: int, timeout: float = 180) -> list[bytes]:
    """Every key on the topic (read_committed), waiting until `expected` have come, then 5 s more for extras."""
    consumer = Consumer(kafka.client_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                                               "isolation.level": "read_committed"}))
    consumer.subscribe([topic])
    keys: list[bytes] = []
    deadline, quiet_until = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        for msg in consumer.consume(500, 0.5):
            if not msg.error():
                keys.append(msg.key())
                assert json.loads(msg.value())["prediction"] in ("POSITIVE", "NEGATIVE")
        if len(keys) >= expected:
            quiet_until = quiet_until or time.monotonic() + 5
            if time.monotonic() >= quiet_until:
                break
    consumer.close()
    return keys


def _wait_records(api: WMLClient, service: WMLService, did: str, count: int, timeout: float = 180) -> None:
    """Until the deployment's driver has committed `count` records in this run (its /metrics-free status)."""
    path = service.dir / "data" / "spark" / did / "status.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(path.read_text()).get("records_in", 0) >= count:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"{count} records not committed in {timeout} s: {api.get_instance_deployment(did).status}")


def _driver_pid(service: WMLService, did: str) -> int:
    return int((service.dir / "data" / "spark" / did / "driver.pid").read_text().split()[0])


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_spark_stream_through_kill_restart_stop_and_run_exactly_once(
        spark_master: str, platform_config: PlatformConfig, kafka: KafkaInfo, kafka_topic: Callable[..., str],
        service_dir: Path) -> None:
    service = WMLService(service_dir, env=spark_env(spark_master, platform_config))
    service.start()
    try:
        user = service.add_user()
        api = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)
        source, target = kafka_topic("in", partitions=PARTITIONS), kafka_topic("out", partitions=PARTITIONS)
        _produce(kafka, source, 0, 2000)
        did = api.create_deployment(MODEL, stream(kafka, source, target), spark_header(spark_master)).id
        _status(api, did, "RUNNING")
        deployment = api.get_instance_deployment(did)
        assert deployment.entity.runtime_environment == "spark-4.2.0"
        _wait_records(api, service, did, 2000)

        # kill -9 of the driver while records flow: the service starts a new one from the checkpoint.
        _produce(kafka, source, 2000, 3000)
        first = _driver_pid(service, did)
        time.sleep(1.0)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while (not (service.dir / "data" / "spark" / did / "driver.pid").exists()
               or _driver_pid(service, did) == first or not _alive(_driver_pid(service, did))):
            assert time.monotonic() < deadline, "no new driver after the kill"
            time.sleep(0.3)

        # A restart of the service re-attaches to the running driver: the same process goes on.
        _status(api, did, "RUNNING")
        second = _driver_pid(service, did)
        service.stop(spark_drivers=False)
        assert _alive(second)
        _produce(kafka, source, 5000, 1000)
        service.start()
        _status(api, did, "RUNNING")
        assert _driver_pid(service, did) == second

        # STOP and RUN: the query stops between batches and resumes from its checkpoint.
        api.set_deployment_status(MODEL, did, "STOPPED")
        _status(api, did, "STOPPED")
        assert not _alive(second)
        stopped = api.get_instance_deployment(did).entity.status_details
        _produce(kafka, source, 6000, 1000)
        api.set_deployment_status(MODEL, did, "RUNNING")
        _status(api, did, "RUNNING")

        keys = _read_all(kafka, target, 7000)
        assert len(keys) == len(set(keys)), f"{len(keys) - len(set(keys))} records written twice"
        assert set(keys) == {str(i).encode() for i in range(7000)}, f"{7000 - len(set(keys))} records lost"
        assert stopped is not None
        assert stopped.position is not None
        # Every partition, from the group's committed offsets (not only what the last driver's run wrote).
        assert stopped.position.topic == source
        assert sorted(stopped.position.offsets) == [str(p) for p in range(PARTITIONS)]
        assert sum(stopped.position.offsets.values()) == 6000

        # A stop the service did not finish (it died between the PATCH and the driver's exit): the next service
        # stops the driver it finds, and the deployment is STOPPED with its position.
        third = _driver_pid(service, did)
        service.stop(spark_drivers=False)
        with sqlite3.connect(service.dir / "data" / "wml.sqlite3") as db:
            db.execute("UPDATE deployments SET desired = 'STOPPED' WHERE id = ?", (did,))
        assert _alive(third)
        service.start(timeout=90)
        _status(api, did, "STOPPED")
        assert not _alive(third)
        api.set_deployment_status(MODEL, did, "RUNNING")
        _status(api, did, "RUNNING")

        # Before the delete takes the driver's state (checkpoint, status, log) away: none of its files, nor any
        # other of the data folder, holds the Kafka password or the Spark secret in plaintext (issue 21).
        state_files = [p for p in (service.data_dir / "spark" / did).rglob("*") if p.is_file()]
        assert any(p.parent.name == "offsets" for p in state_files)  # a real checkpoint is there
        found, _files, _read = plaintext_in_data_folders(
            [service.data_dir], {SPARK_SECRET, *(u.password for u in kafka.users)})
        assert found == []

        # Delete: the driver ends, its state and consumer group go.
        third = _driver_pid(service, did)
        api.delete_instance_deployment(did)
        deadline = time.monotonic() + 90
        group = f"wml-{did}"
        admin = AdminClient(kafka.client_config())
        while _alive(third) or (service.dir / "data" / "spark" / did).exists() or group in {
                g.group_id for g in admin.list_consumer_groups().result().valid}:
            assert time.monotonic() < deadline, "the deleted deployment's driver, state or group is left"
            time.sleep(0.5)
    finally:
        service.stop()
    log = (service.dir / "logs" / "wml-server.log").read_text()
    assert SPARK_SECRET not in log


def test_only_allowed_spark_masters(make_wml_service: Callable[..., WMLService], kafka: KafkaInfo) -> None:
    """A master not on the list gets 400 spark_master_not_allowed, before anything is created or contacted."""
    service = make_wml_service(WML_SERVER_SPARK_MASTERS="spark://127.0.0.1:7077", WML_SERVER_RUN_STREAMS="false")
    user = service.add_user()
    api = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)
    conn = KafkaConnection(kafka_brokers_sasl=[kafka.bootstrap], user="u", password="p-" + uuid.uuid4().hex,
                           security_protocol="SASL_PLAINTEXT")
    create = DeploymentCreate(name="x", input=StreamInput(connection=conn, source={"topic": "a"}),
                              output=StreamOutput(connection=conn, target={"topic": "b"}))
    for master in ("spark://10.1.2.3:7077", "local[4]", "spark://127.0.0.1:7078"):
        with pytest.raises(WMLError) as refused:
            api.create_deployment(MODEL, create, spark_header(master))
        assert refused.value.status == 400
        assert refused.value.code == "spark_master_not_allowed"
        assert master in str(refused.value)
    assert api.list_instance_deployments() == []
    # Allowed, and an ordinary URL (the built-in engine): both accepted.
    assert api.create_deployment(MODEL, create, spark_header("spark://127.0.0.1:7077")).id
    assert api.create_deployment(MODEL, create, spark_header("https://spark.example")).id
    assert requests.get(f"{service.url}/healthz", timeout=5).ok


def test_a_users_scikit_learn_model_runs_on_spark_in_its_sandboxed_worker(
        spark_master: str, platform_config: PlatformConfig, kafka: KafkaInfo, kafka_topic: Callable[..., str],
        service_dir: Path) -> None:
    """The pickled pipeline the v3 client uploads: on Spark it scores in a sandboxed model worker of each Python
    worker of the executors (never in the driver or the service), with the built-in engine's output contract."""
    service = WMLService(service_dir, env=spark_env(spark_master, platform_config))
    service.start()
    try:
        user = service.add_user()
        api = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)
        asset = api.publish_model(meta(), io.BytesIO(pickled_tar_bytes()))
        source, target = kafka_topic("in", partitions=PARTITIONS), kafka_topic("out", partitions=PARTITIONS)
        producer = Producer(kafka.client_config())
        for i in range(300):
            producer.produce(source, json.dumps({"tweet": "so happy, great day" if i % 2 else "awful, I hate this",
                                                 "n": i}).encode(), str(i).encode())
        producer.produce(source, json.dumps({"text": "no tweet"}).encode(), b"nofield")
        assert producer.flush(30) == 0
        dead = kafka_topic("dead")
        body = stream(kafka, source, target, "sklearn")
        assert body.output is not None
        body.output.target = KafkaTarget(topic=target, dead_letter_topic=dead)
        did = api.create_deployment(asset.id, body, spark_header(spark_master)).id
        _status(api, did, "RUNNING")
        assert api.get_instance_deployment(did).entity.runtime_environment == "spark-4.2.0"
        consumer = Consumer(kafka.client_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                                                   "isolation.level": "read_committed"}))
        consumer.subscribe([target])
        seen: dict[bytes, list[dict[str, object]]] = {}
        deadline = time.monotonic() + 180
        while sum(map(len, seen.values())) < 300 and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if not msg.error():
                    seen.setdefault(msg.key(), []).append(json.loads(msg.value()))
        consumer.close()
        assert len(seen) == 300
        assert all(len(v) == 1 for v in seen.values()), "a record written twice"
        assert seen[b"1"][0]["prediction"] == "POSITIVE"
        assert seen[b"2"][0]["prediction"] == "NEGATIVE"
        assert seen[b"2"][0]["n"] == 2
        assert asset.entity.latest_version is not None  # the version the deployment is pinned to names its records
        assert {r[0]["model_version"] for r in seen.values()} == {asset.entity.latest_version.guid}
        # The record the model cannot take went to the dead-letter topic, with where it came from.
        reader = Consumer(kafka.client_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                                                 "isolation.level": "read_committed"}))
        reader.subscribe([dead])
        dead_lettered = []
        deadline = time.monotonic() + 60
        while not dead_lettered and time.monotonic() < deadline:
            dead_lettered = [m for m in reader.consume(10, 0.5) if not m.error()]
        reader.close()
        assert [m.key() for m in dead_lettered] == [b"nofield"]
        refused = json.loads(dead_lettered[0].value())
        assert refused == {"text": "no tweet", "error": "missing_feature", "field": "tweet"}  # and no version
        headers = dict(dead_lettered[0].headers() or [])
        assert headers["wml.source.topic"] == source.encode()
        assert int(headers["wml.source.partition"]) in range(PARTITIONS)
        assert int(headers["wml.source.offset"]) >= 0
        api.delete_instance_deployment(did)
    finally:
        service.stop()
