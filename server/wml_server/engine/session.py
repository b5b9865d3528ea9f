"""One run of a stream: consume, score and produce in Kafka transactions, exactly once.

Exactly once, for read_committed readers of the output topic:
- the producer's transactional id is the deployment's, so `init_transactions` fences any earlier producer
  of the same deployment (a killed process, a runner still shutting down) and aborts what it left open;
- the consumer starts from the group's committed offsets, which only move inside those transactions
  (`send_offsets_to_transaction`), and reads them only once stable (read_committed);
- an aborted transaction rewinds the consumer to the committed offsets, so its records are scored again.
The consumer is assigned every partition of the input topic rather than subscribed: a deployment has one
consumer, so there is nothing to balance, and a restart after `kill -9` need not wait for the dead member's
session to expire before the group hands its partitions out again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from wml_server.engine import failures
from wml_server.engine.clients import ClientFactory
from wml_server.engine.connection import INPUT, OUTPUT, UNKNOWN_TOPIC_CODES, StreamConnection, error_of
from wml_server.engine.failures import StreamFailure, redact
from wml_server.engine.metrics import EngineMetrics
from wml_server.engine.options import StreamOptions
from wml_server.engine.records import score_batch
from wml_server.engine.spec import StreamSpec
from wml_server.engine.state import KAFKA_TRANSACTION_FAILED, StreamCounts

# StreamOptions lived here first; `from wml_server.engine import StreamOptions` is the stable import.
__all__ = ["StreamOptions", "StreamSession"]

log = logging.getLogger(__name__)


class _Aborted(Exception):
    """The batch's transaction was aborted and the consumer rewound: the records come again."""


class StreamSession(StreamConnection):
    """A connection that streams: `connect()`, then `run()` until the stop event, then `close()`."""

    def __init__(self, spec: StreamSpec, options: StreamOptions, clients: ClientFactory, stopping: threading.Event,
                 metrics: EngineMetrics, counts: StreamCounts) -> None:
        super().__init__(spec, options, clients, stopping)
        self.metrics = metrics
        self.counts = counts
        self._aborts = 0
        self._delivery_error: KafkaError | None = None
        now = time.monotonic()
        self._next_probe = now
        self._next_lag = now
        self._next_partitions = now + options.partition_refresh_interval

    # -- streaming ----------------------------------------------------------------------------------------

    def run(self) -> None:
        """Streams until a stop is requested; the last batch is committed before it returns."""
        while not self.stopping.is_set():
            messages = self.consumer.consume(self.options.batch_size, self.options.batch_timeout)
            self.producer.poll(0)
            self._check_errors(INPUT)
            self._check_errors(OUTPUT)
            records = self._usable(messages)
            if records:
                self._process(records)
            self._housekeeping()

    def _usable(self, messages: list[Message]) -> list[Message]:
        records = []
        for message in messages:
            err = message.error()
            if err is None:
                records.append(message)
            elif err.code() in UNKNOWN_TOPIC_CODES:
                raise failures.unknown_topic(INPUT, self.spec.input)
            elif err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise failures.authorization_failed(INPUT, self.spec.input, f"read the topic '{self.spec.input.topic}'",
                                                    self._secrets)
            elif err.fatal():
                raise self._fatal(err)
            else:  # consumer events (e.g. a partition's leader moving) are retried by the client itself
                log.debug("stream %s consumer: %s", self.spec.deployment_id, redact(err.str(), self._secrets))
        return records

    def _process(self, records: list[Message]) -> None:
        started = time.perf_counter()
        batch = score_batch(self.spec.model, [m.value() for m in records])
        self.metrics.scored(time.perf_counter() - started, len(records))
        try:
            self._transaction(records, batch.values)
        except _Aborted:
            return
        self._aborts = 0
        self._down.clear()  # a commit proves both clusters reachable
        self.counts.add(len(records), batch.errored)
        self.metrics.committed(self.spec.deployment_id, len(records), batch.errored)

    def _transaction(self, records: list[Message], values: list[bytes]) -> None:
        deadline = time.monotonic() + self.options.unreachable_timeout
        self._delivery_error = None
        try:
            self.producer.begin_transaction()
            for message, value in zip(records, values, strict=True):
                self._produce(value, message.key(), deadline)
            positions = [tp for tp in self.consumer.position(self.consumer.assignment()) if tp.offset >= 0]
            group = self.consumer.consumer_group_metadata()
            self._retrying(lambda t: self.producer.send_offsets_to_transaction(positions, group, t), deadline)
            self._retrying(self.producer.commit_transaction, deadline)
        except KafkaException as exc:
            err = error_of(exc)
            if err.fatal() or not err.txn_requires_abort():
                raise self._fatal(err) from None
            self._abort_and_rewind(err, deadline)
            raise _Aborted from None

    def _produce(self, value: bytes, key: bytes | None, deadline: float) -> None:
        while True:
            try:
                self.producer.produce(self.spec.output.topic, value, key, on_delivery=self._on_delivery)
                return
            except BufferError:  # the client's queue is full: let deliveries drain it
                self.producer.poll(0.05)
                self._check_deadline(deadline, "delivering records")

    def _on_delivery(self, err: KafkaError | None, _message: Message) -> None:
        if err is not None and self._delivery_error is None:
            self._delivery_error = err

    def _retrying(self, call: Callable[[float], None], deadline: float) -> None:
        """Calls a transactional operation again while Kafka says it is retriable, until `deadline`."""
        while True:
            try:
                call(max(0.1, min(5.0, deadline - time.monotonic())))
                return
            except KafkaException as exc:
                err = error_of(exc)
                if not err.retriable() or err.txn_requires_abort() or err.fatal():
                    raise
            self.producer.poll(0)
            self._check_errors(OUTPUT)
            self._check_deadline(deadline, f"committing a transaction ({err.str()})")

    def _check_deadline(self, deadline: float, doing: str) -> None:
        if time.monotonic() >= deadline:
            raise failures.unreachable(OUTPUT, self.spec.output, self.options.unreachable_timeout, doing,
                                       self._secrets)

    def _abort_and_rewind(self, err: KafkaError, deadline: float) -> None:
        cause = self._delivery_error or err
        self._aborts += 1
        self.metrics.aborted(self.spec.deployment_id)
        log.warning("stream %s: transaction aborted (%s); its records are read again from the committed offsets",
                    self.spec.deployment_id, redact(cause.str(), self._secrets))
        try:
            self._retrying(self.producer.abort_transaction, deadline)
        except KafkaException as exc:
            raise self._fatal(error_of(exc)) from None
        self.consumer.assign(self._stored_offsets(self.partitions))
        if cause.code() in UNKNOWN_TOPIC_CODES:
            raise failures.unknown_topic(OUTPUT, self.spec.output)
        if cause.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise failures.authorization_failed(OUTPUT, self.spec.output, f"write to '{self.spec.output.topic}'",
                                                self._secrets)
        if self._aborts >= self.options.max_consecutive_aborts:
            raise StreamFailure(KAFKA_TRANSACTION_FAILED,
                                f"{self._aborts} transactions in a row were aborted; last error: "
                                f"{redact(cause.str(), self._secrets)}")

    # -- housekeeping -------------------------------------------------------------------------------------

    def _housekeeping(self) -> None:
        now = time.monotonic()
        expired = [r for r, (since, _) in self._down.items() if now - since >= self.options.unreachable_timeout]
        if self._down and (now >= self._next_probe or expired):
            # librdkafka says when brokers go down, not when they come back: ask them (one last time
            # before giving up on them).
            self._next_probe = now + 2.0
            for role in list(self._down):
                if self._reachable(role):
                    del self._down[role]
        for role in expired:
            if role in self._down:
                raise failures.unreachable(role, self._ref(role), self.options.unreachable_timeout,
                                           self._down[role][1], self._secrets)
        if now >= self._next_lag:
            self._next_lag = now + self.options.lag_interval
            self._refresh_lag()
        if now >= self._next_partitions:
            self._next_partitions = now + self.options.partition_refresh_interval
            self._refresh_partitions()

    def _refresh_lag(self) -> None:
        """Sets the lag gauge from the end offsets the last fetch responses carried (read_committed: the
        last stable offset). Asking the broker instead would queue behind the consumer's long-polling
        fetch on the same connection and stall the stream for up to a second each time."""
        total = 0
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                marks = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
                if tp.offset < 0 or marks is None or marks[1] < 0:
                    continue  # nothing fetched or consumed there yet
                total += max(0, marks[1] - tp.offset)
        except KafkaException:
            return
        self.metrics.lag(self.spec.deployment_id, total)

    def _refresh_partitions(self) -> None:
        """Partitions added to the input topic while the stream runs are consumed too."""
        try:
            metadata = self.consumer.list_topics(topic=self.spec.input.topic, timeout=self.options.attempt_timeout)
        except KafkaException:
            return
        topic = metadata.topics.get(self.spec.input.topic)
        if topic is None or topic.error is not None:
            if topic is None or topic.error.code() in UNKNOWN_TOPIC_CODES:
                raise failures.unknown_topic(INPUT, self.spec.input)
            return
        added = sorted(set(topic.partitions) - set(self.partitions))
        if added:
            self.consumer.incremental_assign(self._stored_offsets(added))
            self.partitions = sorted(self.partitions + added)

