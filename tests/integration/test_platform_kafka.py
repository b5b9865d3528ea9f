"""The local Kafka broker is real: SASL/PLAIN authentication, produce and consume, no topic auto-creation."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from wml_localplatform import KafkaInfo


def _quiet(errors: list[KafkaError]) -> dict[str, Any]:
    """Collects client-level errors instead of letting librdkafka print them."""
    return {"error_cb": errors.append, "logger": _NullLogger()}


class _NullLogger:
    def log(self, *args: object) -> None:
        pass


def test_produce_and_consume_over_sasl(kafka: KafkaInfo, kafka_topic: Callable[..., str]) -> None:
    topic = kafka_topic("roundtrip")
    key, value = uuid.uuid4().hex.encode(), b'{"tweet": "I love this phone"}'
    delivered: list[tuple[KafkaError | None, Any]] = []
    producer = Producer(kafka.client_config(**{"enable.idempotence": True}))
    producer.produce(topic, value, key, on_delivery=lambda err, msg: delivered.append((err, msg)))
    assert producer.flush(30) == 0
    assert delivered[0][0] is None

    consumer = Consumer(kafka.client_config(**{"group.id": f"g-{uuid.uuid4().hex[:8]}",
                                               "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        msg = None
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                break
        assert msg is not None, "no record consumed within 30 s"
        assert msg.error() is None, msg.error()
        assert (msg.key(), msg.value()) == (key, value)
    finally:
        consumer.close()


def _authentication_errors(config: dict[str, Any]) -> list[KafkaError]:
    errors: list[KafkaError] = []
    admin = AdminClient({**config, **_quiet(errors)})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=10)
    admin.poll(1)  # serves the error callback
    return [e for e in errors if e.code() == KafkaError._AUTHENTICATION]


def test_wrong_password_is_refused(kafka: KafkaInfo) -> None:
    config = kafka.client_config()
    config["sasl.password"] = "not-the-password"
    refused = _authentication_errors(config)
    assert refused, "a wrong password must be refused by SASL authentication"
    assert "authentication" in refused[0].str().lower()


def test_one_users_password_does_not_open_another(kafka: KafkaInfo) -> None:
    first, *others = kafka.users
    if not others:  # an external broker given with one user: nothing to cross
        pytest.fail("this test needs two users on the broker; the local platform has them")
    config = kafka.client_config(first.name)
    config["sasl.password"] = others[0].password
    assert _authentication_errors(config)


def test_producing_to_an_unknown_topic_fails(kafka: KafkaInfo) -> None:
    topic = f"does-not-exist-{uuid.uuid4().hex[:8]}"
    results: list[KafkaError | None] = []
    producer = Producer(kafka.client_config(**{"topic.metadata.propagation.max.ms": 2000,
                                               "message.timeout.ms": 10000}))
    producer.produce(topic, b"{}", on_delivery=lambda err, msg: results.append(err))
    producer.flush(30)
    assert len(results) == 1
    err = results[0]
    assert err is not None, "a produce to a topic that does not exist must fail (auto-creation is off)"
    assert err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), err
    topics = AdminClient(kafka.client_config()).list_topics(timeout=10).topics
    assert topic not in topics
