"""The two Kafka clients of one stream run: made, checked, connected, and closed; their errors acted on.

Connecting, in order: both topics must exist (metadata, never auto-created); `init_transactions` fences any
earlier producer of the deployment and aborts what it left open; only then is the consumer assigned its
partitions, so the committed offsets it reads are the ones that transaction abort left in place. Each
partition is assigned an explicit start (engine/position.py: committed, else handed over, else
starting_offsets).
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import OFFSET_STORED, KafkaError, KafkaException, TopicPartition

from wml_server.engine import failures
from wml_server.engine.clients import (
    ClientFactory,
    ConsumerLike,
    ErrorInbox,
    ProducerLike,
    consumer_config,
    producer_config,
)
from wml_server.engine.failures import StreamFailure, redact
from wml_server.engine.options import StreamOptions
from wml_server.engine.position import start_offsets
from wml_server.engine.spec import KafkaTopic, StreamSpec
from wml_server.engine.state import KAFKA_ERROR

log = logging.getLogger(__name__)

INPUT, OUTPUT = "input", "output"
DEAD_LETTER = "dead-letter"  # a topic of the output's connection and producer, checked like the output's
UNKNOWN_TOPIC_CODES = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION)
_FENCED_CODES = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
_AUTH_CODES = (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)
_DOWN_CODES = (KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE)
_DENIED_CODES = (KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED)


class Stopped(Exception):
    """A stop was requested while the stream was still connecting."""


def error_of(exc: KafkaException) -> KafkaError:
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, KafkaError) else KafkaError(KafkaError._FAIL, str(exc))


class StreamConnection:
    """The clients of one run; `stopping` is the runner's stop event, checked between bounded attempts."""

    def __init__(self, spec: StreamSpec, options: StreamOptions, clients: ClientFactory,
                 stopping: threading.Event) -> None:
        self.spec = spec
        self.options = options
        self.stopping = stopping
        self._secrets = spec.secrets()
        self._inbox = {INPUT: ErrorInbox(), OUTPUT: ErrorInbox()}
        self._clients = clients
        self._consumer: ConsumerLike | None = None
        self._producer: ProducerLike | None = None
        self.partitions: list[int] = []
        self.start: dict[int, int] = {}  # where this connect started each partition
        self.start_lag: int | None = None  # records behind the end of the input at that moment
        # role -> (since when, last error): brokers librdkafka reported all down and no probe reached since.
        self._down: dict[str, tuple[float, str]] = {}

    # -- connecting ---------------------------------------------------------------------------------------

    @property
    def consumer(self) -> ConsumerLike:
        assert self._consumer is not None, "connect() first"
        return self._consumer

    @property
    def producer(self) -> ProducerLike:
        assert self._producer is not None, "connect() first"
        return self._producer

    def _ref(self, role: str) -> KafkaTopic:
        if role == DEAD_LETTER and self.spec.dead_letter is not None:
            return self.spec.dead_letter
        return self.spec.input if role == INPUT else self.spec.output

    def connect(self) -> None:
        """Checks every topic, fences earlier producers, assigns the input partitions. Raises Stopped."""
        try:
            self._consumer = self._clients.consumer(consumer_config(self.spec, self._inbox[INPUT]))
        except (KafkaException, ValueError, TypeError) as exc:
            raise failures.configuration_invalid(INPUT, self.spec.input, str(exc), self._secrets) from None
        try:
            self._producer = self._clients.producer(
                producer_config(self.spec, self._inbox[OUTPUT], self.options.transaction_timeout_ms,
                                transactional=self.options.exactly_once))
        except (KafkaException, ValueError, TypeError) as exc:
            raise failures.configuration_invalid(OUTPUT, self.spec.output, str(exc), self._secrets) from None
        self.partitions = self._await_topic(INPUT)
        self._await_topic(OUTPUT)
        if self.spec.dead_letter is not None:
            self._await_topic(DEAD_LETTER)
        if self.options.exactly_once:
            self._init_transactions()
        self._assign_start()

    def _assign_start(self) -> None:
        deadline = time.monotonic() + self.options.unreachable_timeout
        while not self.stopping.is_set():
            try:
                self.start, fresh, self.start_lag = start_offsets(
                    self.consumer, self.spec.input.topic, self.partitions, self.spec.start,
                    self.options.attempt_timeout)
                if fresh:
                    # A plain group commit (the group has no member: the consumer is assigned, not subscribed),
                    # so that a restart before the first transaction starts here and does not resolve "latest"
                    # again, skipping what came meanwhile.
                    self.consumer.commit(offsets=fresh, asynchronous=False)
                self.consumer.assign([TopicPartition(self.spec.input.topic, p, o) for p, o in self.start.items()])
                return
            except KafkaException as exc:
                err = error_of(exc)
            self._poll_errors(INPUT)
            if time.monotonic() >= deadline:
                raise failures.unreachable(INPUT, self.spec.input, self.options.unreachable_timeout, err.str(),
                                           self._secrets)
        raise Stopped

    def _stored_offsets(self, partitions: list[int]) -> list[TopicPartition]:
        # OFFSET_STORED: the group's committed offset (auto.offset.reset=earliest when it has none).
        return [TopicPartition(self.spec.input.topic, p, OFFSET_STORED) for p in partitions]

    def _poll_errors(self, role: str) -> None:
        """Serves the client's callbacks (error_cb, logs), then acts on what they reported."""
        if role == INPUT:
            if not self.consumer.assignment():  # once assigned, poll() could hand out a record
                self.consumer.poll(0)
        else:
            self.producer.poll(0)
        self._check_errors(role)

    def _check_errors(self, role: str) -> None:
        ref = self._ref(role)
        for err in self._inbox[role].take():
            code = err.code()
            if code in _AUTH_CODES:
                raise failures.authentication_failed(role, ref, err.str(), self._secrets)
            if err.fatal():
                raise self._fatal(err)
            if code in _DOWN_CODES and role not in self._down:
                self._down[role] = (time.monotonic(), err.str())
            log.debug("stream %s %s client: %s", self.spec.deployment_id, role, redact(err.str(), self._secrets))

    def _fatal(self, err: KafkaError) -> StreamFailure:
        if err.code() in _FENCED_CODES:
            return failures.fenced(self.spec.output)
        return StreamFailure(KAFKA_ERROR, f"Kafka reported a fatal error: {redact(err.str(), self._secrets)}")

    def _await_topic(self, role: str) -> list[int]:
        """The topic's partitions, once its brokers answer; FAILED if it does not exist or stays unreachable."""
        ref = self._ref(role)
        client: ConsumerLike | ProducerLike = self.consumer if role == INPUT else self.producer
        deadline = time.monotonic() + self.options.unreachable_timeout
        last = ""
        while not self.stopping.is_set():
            try:
                metadata = client.list_topics(topic=ref.topic, timeout=self.options.attempt_timeout)
            except KafkaException as exc:
                metadata, last = None, error_of(exc).str()
            self._poll_errors(INPUT if role == INPUT else OUTPUT)
            if metadata is not None:
                topic = metadata.topics.get(ref.topic)
                err: KafkaError | None = topic.error if topic is not None else None
                if topic is not None and err is None and topic.partitions:
                    return sorted(topic.partitions)
                code = err.code() if err is not None else KafkaError.UNKNOWN_TOPIC_OR_PART
                if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    raise failures.authorization_failed(role, ref, f"use the topic '{ref.topic}'", self._secrets)
                if code in UNKNOWN_TOPIC_CODES:
                    raise failures.unknown_topic(role, ref)
                last = err.str() if err is not None else last  # e.g. a leader not elected yet: try again
            if time.monotonic() >= deadline:
                raise failures.unreachable(role, ref, self.options.unreachable_timeout, last, self._secrets)
        raise Stopped

    def _init_transactions(self) -> None:
        deadline = time.monotonic() + self.options.unreachable_timeout
        while not self.stopping.is_set():
            try:
                # Fences every earlier producer of this deployment and aborts the transaction it left open.
                self.producer.init_transactions(self.options.attempt_timeout)
                return
            except KafkaException as exc:
                err = error_of(exc)
            self._poll_errors(OUTPUT)
            if err.code() in _DENIED_CODES:
                raise failures.authorization_failed(
                    OUTPUT, self.spec.output, f"use the transactional id '{self.spec.transactional_id}'",
                    self._secrets)
            if err.fatal() or not err.retriable():
                raise self._fatal(err)
            if time.monotonic() >= deadline:
                raise failures.unreachable(OUTPUT, self.spec.output, self.options.unreachable_timeout, err.str(),
                                           self._secrets)
        raise Stopped

    def _reachable(self, role: str) -> bool:
        client: ConsumerLike | ProducerLike = self.consumer if role == INPUT else self.producer
        try:
            client.list_topics(topic=self._ref(role).topic, timeout=self.options.attempt_timeout)
        except KafkaException:
            return False
        return True

    # -- closing ------------------------------------------------------------------------------------------

    def close(self, clean: bool) -> None:
        """Closes both clients. `clean`: no transaction is open, so nothing is left to deliver."""
        if self._consumer is not None:
            try:
                self._consumer.close()  # offsets were committed by the transactions, not here
            except (KafkaException, RuntimeError) as exc:
                log.debug("stream %s: closing the consumer: %s", self.spec.deployment_id, exc)
        if self._producer is not None:
            try:
                if not clean:
                    # Whatever is still queued belongs to a transaction that will never commit.
                    self._producer.purge(in_queue=True, in_flight=True, blocking=False)
                self._producer.flush(1.0 if clean else 0)
                if clean:
                    # Not after a failure: close() would try to abort the open transaction without a timeout.
                    self._producer.close()
            except (KafkaException, RuntimeError) as exc:
                log.debug("stream %s: closing the producer: %s", self.spec.deployment_id, exc)
        self._consumer = self._producer = None
