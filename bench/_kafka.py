"""The benchmarks' Kafka: a local broker (hack/localplatform) or the one the environment names; topics, data."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from localplatform.config import PlatformConfig
from localplatform.kafka import KafkaBroker, KafkaInfo


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
        yield broker.start()
    finally:
        broker.destroy()


def topic_admin(info: KafkaInfo, action: str, topics: tuple[str, ...], partitions: int = 1) -> None:
    """Creates or deletes topics; the client is gone when this returns (before the broker may stop)."""
    admin = AdminClient(info.client_config())
    futures = (admin.create_topics([NewTopic(t, partitions, 1) for t in topics]) if action == "create"
               else admin.delete_topics(list(topics)))
    for future in futures.values():
        future.result(30)


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
