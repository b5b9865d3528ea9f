"""Faults under a stream on Spark (issue 18): kill -9 of an executor, of a worker, of the master and of the
driver, and a broker restart, each while records flow. Spark's own Kafka sink may write a record twice after
such a failure; ours may not: every record is read back read_committed, 0 lost, 0 repeated, and the deployment is
RUNNING again after each fault without anyone touching it.

The faults hit the run's shared Spark cluster (the workers and master come back on their ports) and broker.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from tests.conftest import Figures
from tests.integration.test_wml_service_api import MODEL
from tests.integration.test_wml_service_spark import (
    _alive,
    _driver_pid,
    _produce,
    _read_all,
    _status,
    spark_env,
    spark_header,
    stream,
)
from tests.support import children_running
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_localplatform import KafkaBroker, KafkaInfo, PlatformConfig, SparkCluster
from wml_localplatform.wmlservice import WMLService

EXECUTOR = b"CoarseGrainedExecutorBackend"
CHUNK = 3000
PARTITIONS = 4


def _committed(kafka: KafkaInfo, group: str, topic: str, partitions: int) -> int:
    """Records the deployment's group has committed on the input topic: what the sink has written, whichever
    driver wrote it (a driver's own count starts again at 0)."""
    consumer = Consumer(kafka.client_config(**{"group.id": group, "isolation.level": "read_committed"}))
    try:
        done = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
    except KafkaException:
        return -1  # the broker is restarting
    finally:
        consumer.close()
    return sum(max(0, tp.offset) for tp in done)


def _executors(cluster: SparkCluster) -> list[int]:
    return [pid for worker in cluster.info().worker_pids for pid in children_running(worker, EXECUTOR)]


def _wait_flowing(kafka: KafkaInfo, group: str, topic: str, sent: int, timeout: float = 240) -> float:
    """Seconds until the group has committed every record sent."""
    started = time.monotonic()
    while (done := _committed(kafka, group, topic, PARTITIONS)) < sent:
        assert time.monotonic() - started < timeout, f"the stream committed {done} of {sent} records"
        time.sleep(0.5)
    return time.monotonic() - started


@pytest.mark.timeout(1500)
def test_spark_stream_survives_every_component_killed(
        spark_cluster: SparkCluster | None, kafka_broker: KafkaBroker | None, spark_master: str,
        platform_config: PlatformConfig, kafka: KafkaInfo, kafka_topic: Callable[..., str], tmp_path: Path,
        figures: Figures) -> None:
    assert spark_cluster is not None, "this case kills the run's own Spark cluster: unset WSO_SPARK_MASTER"
    service = WMLService(tmp_path / "wml", env={**spark_env(spark_master, platform_config),
                                                "WML_SERVER_SPARK_CORES_PER_STREAM": "2"})
    service.start()
    sent = 0
    try:
        user = service.add_user()
        api = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)
        source, target = kafka_topic("in", partitions=PARTITIONS), kafka_topic("out", partitions=PARTITIONS)
        did = api.create_deployment(MODEL, stream(kafka, source, target, "faults"), spark_header(spark_master)).id
        _status(api, did, "RUNNING")

        def executor() -> None:
            pids = _executors(spark_cluster)
            assert pids, "no executor runs"
            os.kill(pids[0], signal.SIGKILL)

        def worker() -> None:
            spark_cluster.restart_worker(0, kill=True, down_seconds=2)

        def master() -> None:
            spark_cluster.restart_master(kill=True, down_seconds=2)

        def driver() -> None:
            os.kill(_driver_pid(service, did), signal.SIGKILL)

        def broker() -> None:
            assert kafka_broker is not None
            kafka_broker.restart(down_seconds=5)

        faults: list[tuple[str, Callable[[], None]]] = [("executor", executor), ("worker", worker),
                                                         ("master", master), ("driver", driver)]
        if kafka_broker is not None:
            faults.append(("broker", broker))
        if only := os.environ.get("WSO_SPARK_FAULTS"):  # e.g. "broker,driver": a look at some of them alone
            faults = [f for f in faults if f[0] in only.split(",")]
        for name, fault in faults:
            _produce(kafka, source, sent, CHUNK)
            sent += CHUNK
            time.sleep(1.0)  # into the chunk: the fault lands mid-stream
            fault()
            started = time.monotonic()
            _wait_flowing(kafka, f"wml-{did}", source, sent)
            _status(api, did, "RUNNING")
            figures.add("spark", fault=f"kill -9 {name}" if name != "broker" else "broker restart (5 s down)",
                        records=CHUNK, seconds_to_recover=round(time.monotonic() - started, 1))
        _produce(kafka, source, sent, CHUNK)
        sent += CHUNK
        keys = _read_all(kafka, target, sent, timeout=300)
        repeated, lost = len(keys) - len(set(keys)), sent - len(set(keys))
        figures.add("spark", fault="all of the above", records=sent, lost=lost, repeated=repeated)
        assert repeated == 0, f"{repeated} records written twice"
        assert set(keys) == {str(i).encode() for i in range(sent)}, f"{lost} records lost"
        assert api.get_instance_deployment(did).status == "RUNNING"
        last = _driver_pid(service, did)
        api.delete_instance_deployment(did)
        deadline = time.monotonic() + 120
        while _alive(last):
            assert time.monotonic() < deadline, "the deleted deployment's driver still runs"
            time.sleep(0.5)
    finally:
        service.stop()
