"""What a deployment leaves on the broker (engine/cleanup.py): an abandoned transaction is aborted by fencing."""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer

from wml_localplatform import KafkaInfo
from wml_server.engine.cleanup import fence
from wml_server.engine.spec import KafkaEndpoint, KafkaTopic, StreamSpec
from wml_server.models.sentiment import SentimentModel

pytestmark = pytest.mark.integration


def _spec(kafka: KafkaInfo, source: str, target: str) -> StreamSpec:
    user = kafka.users[-1]
    conn = KafkaEndpoint([kafka.bootstrap], user=user.name, password=user.password,
                         security_protocol="SASL_PLAINTEXT")
    return StreamSpec(str(uuid.uuid4()), SentimentModel(), KafkaTopic(source, conn), KafkaTopic(target, conn))


def _first_visible(kafka: KafkaInfo, topic: str, timeout: float) -> float | None:
    """Seconds until a read_committed reader sees a record of `topic`, or None."""
    consumer = Consumer(kafka.client_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                                               "isolation.level": "read_committed"}))
    consumer.subscribe([topic])
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                return time.monotonic() - started
    finally:
        consumer.close()
    return None


def test_an_abandoned_transaction_holds_readers_back_until_fenced(kafka: KafkaInfo,
                                                                 kafka_topic: Callable[..., str]) -> None:
    target = kafka_topic("out")
    spec = _spec(kafka, kafka_topic("in"), target)
    # What a runner that FAILED mid-transaction leaves: connection.close(clean=False) purges, flushes 0 and
    # drops the producer without abort_transaction.
    producer = Producer({**kafka.client_config(kafka.users[-1].name), "transactional.id": spec.transactional_id,
                         "transaction.timeout.ms": 60_000})
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce(target, b"in the open transaction", b"open")
    assert producer.flush(10) == 0
    producer.purge(in_queue=True, in_flight=True, blocking=False)
    producer.flush(0)
    del producer
    gc.collect()
    plain = Producer(kafka.client_config())
    plain.produce(target, b"after", b"after")
    assert plain.flush(10) == 0
    held = _first_visible(kafka, target, timeout=5)
    assert held is None, "the abandoned transaction did not hold readers back (then fencing is not needed)"
    assert fence(spec, timeout=10)  # ~1 s here
    assert _first_visible(kafka, target, timeout=10) is not None  # at once, not after transaction.timeout.ms
