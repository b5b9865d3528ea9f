"""The Kafka clients of one stream: their configuration, and where their errors and logs go.

The runner talks to the clients through the two Protocols below, so the transaction logic can be tested
with fakes; `KafkaClients` builds the real confluent-kafka ones.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, overload

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from wml_server.engine.failures import redact
from wml_server.engine.spec import StreamSpec

LIBRDKAFKA_LOG = logging.getLogger("wml_server.engine.librdkafka")

# Outputs are at most 1,000,000 bytes (records.MAX_OUTPUT_BYTES); the message also carries its key and
# headers, so the producer's limit leaves room for them. Brokers accept 1,048,588 bytes by default.
PRODUCER_MESSAGE_MAX_BYTES = 1_048_576


DeliveryReport = Callable[[KafkaError | None, Message], None]


class ConsumerLike(Protocol):
    """The part of confluent_kafka.Consumer a runner uses."""

    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def incremental_assign(self, partitions: list[TopicPartition]) -> None: ...
    def assignment(self) -> list[TopicPartition]: ...
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...
    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...
    def consumer_group_metadata(self) -> Any: ...
    @overload
    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[True] = ...) -> None: ...
    @overload
    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[False]) -> list[TopicPartition]: ...
    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]: ...
    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = -1,
                              cached: bool = False) -> tuple[int, int] | None: ...
    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...
    def poll(self, timeout: float = -1) -> Message | None: ...
    def close(self) -> None: ...


Headers = list[tuple[str, str | bytes | None]]  # a record's Kafka headers, as confluent-kafka takes them


class ProducerLike(Protocol):
    """The part of confluent_kafka.Producer a runner uses."""

    def init_transactions(self, timeout: float = -1) -> None: ...
    def begin_transaction(self) -> None: ...
    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                headers: Headers | None = None, on_delivery: DeliveryReport | None = None) -> None: ...
    def send_offsets_to_transaction(self, positions: list[TopicPartition], group_metadata: Any,
                                    timeout: float = -1) -> None: ...
    def commit_transaction(self, timeout: float = -1) -> None: ...
    def abort_transaction(self, timeout: float = -1) -> None: ...
    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...
    def poll(self, timeout: float = -1) -> int: ...
    def flush(self, timeout: float = -1) -> int: ...
    def __len__(self) -> int: ...  # messages not yet delivered (or failed) and reported
    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None: ...
    def close(self) -> bool: ...


class ClientFactory(Protocol):
    def consumer(self, config: dict[str, Any]) -> ConsumerLike: ...
    def producer(self, config: dict[str, Any]) -> ProducerLike: ...


class KafkaClients:
    """The real clients (confluent-kafka)."""

    def consumer(self, config: dict[str, Any]) -> ConsumerLike:
        consumer: ConsumerLike = Consumer(config)
        return consumer

    def producer(self, config: dict[str, Any]) -> ProducerLike:
        producer: ProducerLike = Producer(config)
        return producer


class ErrorInbox:
    """Receives librdkafka's client-level errors (error_cb) until the runner takes them."""

    def __init__(self) -> None:
        self._errors: list[KafkaError] = []
        self._lock = threading.Lock()

    def __call__(self, error: KafkaError) -> None:
        with self._lock:
            self._errors.append(error)

    def take(self) -> list[KafkaError]:
        with self._lock:
            errors, self._errors = self._errors, []
        return errors


class LibrdkafkaLog:
    """The `logger` of a client: librdkafka's lines go to Python logging at DEBUG, secrets removed.

    Everything that matters reaches the runner through error_cb and becomes a status; at DEBUG the client's
    own lines (one per failed connection attempt, many per second) stay out of the service log.
    """

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = list(secrets)

    def log(self, level: int, fmt: str, *args: object) -> None:
        if LIBRDKAFKA_LOG.isEnabledFor(logging.DEBUG):
            try:
                line = fmt % args
            except (TypeError, ValueError):
                line = " ".join(map(str, (fmt, *args)))
            LIBRDKAFKA_LOG.debug("%s", redact(line, self._secrets))


def _common(spec: StreamSpec, role: str, errors: Callable[[KafkaError], None]) -> dict[str, Any]:
    return {
        "client.id": f"wml-{spec.deployment_id}-{role}",
        "error_cb": errors,
        "logger": LibrdkafkaLog(spec.secrets()),
        # Topics are the user's to create: a missing one is reported, never created on a permissive broker.
        "allow.auto.create.topics": False,
        # Come back quickly after a broker restart; the default backs off to 10 s.
        "reconnect.backoff.max.ms": 2000,
    }


def consumer_config(spec: StreamSpec, errors: Callable[[KafkaError], None]) -> dict[str, Any]:
    return {
        **spec.input.connection.to_librdkafka(),
        **_common(spec, "in", errors),
        "group.id": spec.group_id,
        # Offsets are committed inside the producer's transactions, never by the consumer itself.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # Records of aborted transactions upstream are not scored; committed offsets are read only once stable.
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    }


def producer_config(spec: StreamSpec, errors: Callable[[KafkaError], None],
                    transaction_timeout_ms: int, transactional: bool = True) -> dict[str, Any]:
    """`transactional=False` only for StreamOptions.exactly_once=False (measuring what exactly-once costs)."""
    config = {
        **spec.output.connection.to_librdkafka(),
        **_common(spec, "out", errors),
        "transactional.id": spec.transactional_id,
        "enable.idempotence": True,
        # An open transaction holds back every read_committed reader of the output topic; if this process
        # dies and is not restarted, the broker aborts it after this long.
        "transaction.timeout.ms": transaction_timeout_ms,
        "linger.ms": 5,
        # Only failures call the delivery callback (confluent-kafka skips the others in C): a transaction's
        # commit fails if any of its records did, and a Message and a Python call per record delivered would
        # cost the scoring thread, which serves the reports, time on every record.
        "delivery.report.only.error": True,
        "message.max.bytes": PRODUCER_MESSAGE_MAX_BYTES,
        # A transaction begun right after the previous commit is refused (CONCURRENT_TRANSACTIONS) until the
        # broker has written that commit's markers, a few ms later; librdkafka's default first retry comes
        # after 100 ms, then longer. Java's producer retries this case after 20 ms.
        "retry.backoff.ms": 20,
        "retry.backoff.max.ms": 200,
    }
    if not transactional:
        del config["transactional.id"], config["transaction.timeout.ms"]
    return config
