"""The benchmarks' Kafka: a local broker (wml_localplatform) or the one the environment names; topics, data."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from _machine import cpu_seconds
from wml_localplatform.config import PlatformConfig
from wml_localplatform.kafka import KafkaBroker, KafkaInfo

# The PID file of the broker kafka() started (none for one the environment names): its CPU is counted beside runs.
BROKER_PID_FILE: list[Path] = []


@contextmanager
def kafka() -> Iterator[KafkaInfo]:
    """WSO_KAFKA_BOOTSTRAP with WSO_KAFKA_USERNAME / WSO_KAFKA_PASSWORD (and WSO_KAFKA_SECURITY_PROTOCOL,
    WSO_KAFKA_SASL_MECHANISM if not SASL_PLAINTEXT / PLAIN), as for the tests; else a broker of our own in a
    temporary folder, stopped (by its PID) and removed on the way out."""
    if external := KafkaInfo.from_env():
        yield external
        return
    broker = KafkaBroker(PlatformConfig.load(), Path(tempfile.mkdtemp(prefix="wso-bench-kafka-")))
    try:
        info = broker.start()
        BROKER_PID_FILE[:] = [broker.pid_file]
        yield info
    finally:
        BROKER_PID_FILE.clear()
        broker.destroy()


def broker_cpu_seconds() -> float:
    if not BROKER_PID_FILE:
        return float("nan")
    try:
        return cpu_seconds(BROKER_PID_FILE[0].read_text().split()[0])
    except OSError:
        return float("nan")


def topic_admin(info: KafkaInfo, action: str, topics: tuple[str, ...], partitions: int = 1) -> None:
    """Creates or deletes topics; the client is gone when this returns (before the broker may stop)."""
    admin = AdminClient(info.client_config())
    futures = (admin.create_topics([NewTopic(t, partitions, 1) for t in topics]) if action == "create"
               else admin.delete_topics(list(topics)))
    for future in futures.values():
        future.result(30)
    if action == "create":
        # The broker answers the create before every listener's metadata shows the topic: a client that asks at
        # once can be told it does not exist (and a stream told so stops, FAILED). Wait until it is seen.
        deadline = time.monotonic() + 30
        while any(admin.list_topics(t, timeout=5).topics[t].error is not None for t in topics):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics {topics} not visible 30 s after they were created")
            time.sleep(0.05)


def preload(info: KafkaInfo, topic: str, payloads: list[bytes]) -> None:
    """Writes payloads[i] keyed by str(i), all acknowledged when this returns."""
    producer = Producer({**info.client_config(), "linger.ms": 20, "enable.idempotence": True, "log_level": 3})
    for i, value in enumerate(payloads):
        try:
            producer.produce(topic, value, str(i).encode())
        except BufferError:  # the client's queue is full: empty it
            producer.flush(30)
            producer.produce(topic, value, str(i).encode())
    if producer.flush(60) != 0:
        raise RuntimeError("preloading the input topic did not finish")
