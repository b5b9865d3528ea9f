"""The demo's Kafka topics: tweets in as the collector would write them, scored records out (read_committed)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from wml_localplatform.demo.errors import DemoError
from wml_localplatform.kafka import KafkaInfo
from wml_localplatform.tweets import Tweet

QUIET = {"log_level": 4}  # librdkafka: warnings and errors only, no informational lines in the demo's output


def record(tweet: Tweet) -> tuple[bytes, bytes]:
    """A Kafka record (key, value) as the marketing team's collector would write it."""
    return tweet.id.encode(), json.dumps({"id": tweet.id, "tweet": tweet.text}).encode()


class OutputReader:
    """Reads the output topic as a read_committed consumer (what exactly-once promises) and counts keys."""

    def __init__(self, kafka: KafkaInfo, topic: str) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer(kafka.client_config("wml", **QUIET, **{
            "group.id": f"demo-reader-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
            "isolation.level": "read_committed", "enable.auto.commit": False}))
        self.consumer.subscribe([topic])
        self.by_key: dict[str, int] = {}
        self.records: list[dict[str, Any]] = []

    def poll(self, seconds: float) -> list[dict[str, Any]]:
        """The records that arrived within `seconds`."""
        new: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(min(0.2, max(0.01, deadline - time.monotonic())))
            if msg is None or msg.error():
                continue
            key = (msg.key() or b"").decode()
            self.by_key[key] = self.by_key.get(key, 0) + 1
            try:
                value = json.loads(msg.value() or b"")
            except ValueError:
                value = {"error": "not JSON"}
            self.records.append(value)
            new.append(value)
        return new

    def close(self) -> None:
        self.consumer.close()


def produce(kafka: KafkaInfo, topic: str, tweets: list[Tweet]) -> None:
    from confluent_kafka import Producer

    producer = Producer(kafka.client_config("wml", **QUIET))
    for tweet in tweets:
        key, value = record(tweet)
        producer.produce(topic, value, key)
    if producer.flush(30) != 0:
        raise DemoError(f"could not deliver every tweet to topic {topic} within 30 s")


def create_topics(kafka: KafkaInfo, topics: list[str]) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient(kafka.client_config("admin", **QUIET))
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [NewTopic(t, num_partitions=1, replication_factor=1) for t in topics if t not in existing]
    for future in admin.create_topics(wanted).values() if wanted else []:
        future.result(30)
