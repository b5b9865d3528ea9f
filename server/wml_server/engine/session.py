"""One run of a stream: consume, score and produce in Kafka transactions, exactly once.

Exactly once, for read_committed readers of the output topic:
- the producer's transactional id is the deployment's, so `init_transactions` fences any earlier producer
  of the same deployment (a killed process, a runner still shutting down) and aborts what it left open;
- the consumer starts from the group's committed offsets, which only move inside those transactions
  (`send_offsets_to_transaction`), and reads them only once stable (read_committed);
- an aborted transaction rewinds the consumer to the committed offsets, so its records are scored again;
- clients that saw every broker go down are never used for a transaction again: once the brokers answer, the
  stream reconnects with new clients (the open transaction is aborted by the fencing, its records read again).
  librdkafka's transactional producer can otherwise block for good, past its timeout, in
  send_offsets_to_transaction after a broker restart: it keeps waiting for the group coordinator it had
  cached, whose broker handle the re-bootstrap decommissioned (librdkafka issues #5456 and #5511).
The consumer is assigned every partition of the input topic rather than subscribed: a deployment has one
consumer, so there is nothing to balance, and a restart after `kill -9` need not wait for the dead member's
session to expire before the group hands its partitions out again.

Pipelined while there is a backlog: when a full batch comes in, it is scored in a scoring thread while the
batch before it commits in this one (broker round trips, the GIL released). Meanwhile the scoring thread
also serves that batch's delivery reports, between chunks of records: confluent-kafka takes the GIL for
every report (only failures reach Python, delivery.report.only.error, but each report is served in C under
the GIL), and this thread, asking for it while the other computes, would get it only every switch
interval (5 ms), so 500 reports would hold the transaction until the scoring ends. A batch that is not
full means the stream has caught up: it is committed at once, with the batch before it in the same
transaction. A caught-up stream takes the next record as soon as it comes (and whatever came with it),
so below the batch rate a batch is what arrived while the previous transaction committed.
Each transaction commits the offsets just past its own records (not the consumer's position, which may be a
batch ahead), and records are only ever produced after the previous transaction committed, so the output
keeps the input's order per partition. When a transaction is aborted or the clients are replaced, the batch
scored meanwhile is dropped too: the rewind reads it again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from wml_server.engine import failures
from wml_server.engine.clients import ClientFactory, ErrorInbox, Headers, ProducerLike
from wml_server.engine.connection import (
    DEAD_LETTER,
    INPUT,
    OUTPUT,
    UNKNOWN_TOPIC_CODES,
    StreamConnection,
    error_of,
)
from wml_server.engine.failures import StreamFailure, redact
from wml_server.engine.metrics import EngineMetrics
from wml_server.engine.options import StreamOptions
from wml_server.engine.position import StreamProgress, lag_of
from wml_server.engine.records import ScoredBatch
from wml_server.engine.scoring import Lanes, WorkerLost, open_process_scorers, open_scorer, runs_in_workers
from wml_server.engine.spec import StreamSpec
from wml_server.engine.state import KAFKA_TRANSACTION_FAILED, SCORING_WORKER_FAILED, StreamCounts

# StreamOptions lived here first; `from wml_server.engine import StreamOptions` is the stable import.
__all__ = ["StreamOptions", "StreamSession"]

log = logging.getLogger(__name__)

# Records scored between two polls for delivery reports in the scoring thread (~5 ms of VADER).
_SERVE_EVERY = 64
_MAX_WORKERS_LOST = 3


# Headers of a record on the dead-letter topic: where its input record was (decimal strings).
HEADER_SOURCE_TOPIC = "wml.source.topic"
HEADER_SOURCE_PARTITION = "wml.source.partition"
HEADER_SOURCE_OFFSET = "wml.source.offset"


def source_headers(topic: str, message: Message) -> Headers:
    """Where a dead-lettered record's input was: topic, partition and offset, so it can be found and replayed."""
    return [(HEADER_SOURCE_TOPIC, topic.encode()),
            (HEADER_SOURCE_PARTITION, str(message.partition()).encode()),
            (HEADER_SOURCE_OFFSET, str(message.offset()).encode())]


class _Aborted(Exception):
    """The batch's transaction was aborted and the consumer rewound: the records come again."""


class _Reconnect(Exception):
    """The batch's transaction is given up with the clients that lived through a broker outage, or with a
    scoring worker that was lost."""


@dataclass
class _Batch:
    """Records consumed together, and their scoring (values and seconds) in the scoring thread."""

    records: list[Message]
    full: bool  # as many records as a consume may return: more are probably waiting
    scoring: Future[tuple[ScoredBatch, float]] | None = None  # once started


class StreamSession(StreamConnection):
    """A connection that streams: `connect()`, then `run()` until the stop event, then `close()`."""

    def __init__(self, spec: StreamSpec, options: StreamOptions, clients: ClientFactory, stopping: threading.Event,
                 metrics: EngineMetrics, counts: StreamCounts, progress: StreamProgress | None = None) -> None:
        super().__init__(spec, options, clients, stopping)
        self.metrics = metrics
        self.counts = counts
        self.progress = progress or StreamProgress()
        self._aborts = 0
        self._outage = False  # every broker of a client went down since these clients were made
        self._delivery_error: KafkaError | None = None
        self._delivery_topic: str | None = None  # the topic of the record whose delivery failed
        self._reports_done = threading.Event()  # the producer has nothing left to deliver, or the scoring
        # serving its reports has ended
        now = time.monotonic()
        self._next_probe = now
        self._next_lag = now
        self._next_partitions = now + options.partition_refresh_interval
        self._lanes: Lanes | None = None
        self._worker_lost = False  # a scoring worker was lost: new clients and workers, from the committed offsets
        self._workers_lost = 0  # in a row, without a commit between

    def connect(self) -> None:
        # The model first: one that does not load fails the stream before any Kafka client is made.
        workers = self.options.scoring_workers if runs_in_workers(self.spec.model) else 0
        if workers:
            try:
                self._lanes = Lanes(open_process_scorers(self.spec.model, self.spec.deployment_id, workers),
                                    local=open_scorer(self.spec.model, self.spec.deployment_id))
            except WorkerLost as exc:
                raise StreamFailure(SCORING_WORKER_FAILED, str(exc)) from None
        else:
            self._lanes = Lanes([open_scorer(self.spec.model, self.spec.deployment_id)])
        super().connect()
        self.progress.begin(self.spec.input.topic, self.start, self.start_lag)

    def close(self, clean: bool) -> None:
        super().close(clean)
        if self._lanes is not None:
            self._lanes.close()
            self._lanes = None

    def scoring_pids(self) -> list[int]:
        """The scoring workers' process ids (none when the model scores in this process)."""
        lanes = self._lanes
        return lanes.pids() if lanes is not None else []

    # -- streaming ----------------------------------------------------------------------------------------

    def run(self) -> None:
        """Streams until a stop is requested; the batch in flight is committed before it returns."""
        scorer = ThreadPoolExecutor(1, thread_name_prefix=f"wml-score-{self.spec.deployment_id[:8]}")
        try:
            self._stream(scorer)
        finally:
            scorer.shutdown(wait=False, cancel_futures=True)  # a scoring still running just ends unused

    def _stream(self, scorer: ThreadPoolExecutor) -> None:
        pending: _Batch | None = None  # a full batch, consumed and being scored; its transaction comes next
        while not self.stopping.is_set():
            # With a batch to commit, take only what is fetched already: that batch does not wait for more.
            messages = self._fetch(0 if pending else self.options.batch_timeout)
            self.producer.poll(0)
            self._check_errors(INPUT)
            self._check_errors(OUTPUT)
            if self._worker_lost:
                pending = None
                self._reconnect("a scoring worker was lost")
                continue
            if self._outage:
                # What was fetched meanwhile is read again by the new clients, from the committed offsets.
                pending = None
                self._housekeeping()  # probes the brokers; FAILED once unreachable for unreachable_timeout
                if not self._down:
                    self._reconnect("the Kafka brokers are back after an outage")
                continue
            records = self._usable(messages)
            fetched = _Batch(records, len(messages) >= self.options.batch_size) if records else None
            batches = [b for b in (pending, fetched) if b is not None]
            # A full batch is scored in the scoring thread while the one before it commits; anything else
            # commits now, with the one before it.
            pending = batches.pop() if fetched is not None and fetched.full else None
            if batches:
                try:
                    self._process(batches, scorer, then=pending)
                except (_Aborted, _Reconnect):
                    pending = None  # rewound, or new clients to come: read again from the committed offsets
            if pending is not None:
                self._start(pending, scorer)  # if the transaction did not
            self._housekeeping()
        if pending is not None:
            with contextlib.suppress(_Aborted, _Reconnect):  # read again at the next start
                self._process([pending], scorer)

    def _fetch(self, wait: float) -> list[Message]:
        """Up to a batch of what the consumer has fetched already; when it has nothing, the first record that
        comes within `wait` seconds, with whatever came with it. Not consume(batch, wait): that waits the whole
        `wait` for a full batch, which below the batch rate is every time, and adds `wait` to each record's
        latency. Records that arrive while a transaction commits make the next batch."""
        messages = self.consumer.consume(self.options.batch_size, 0)
        if messages or wait <= 0:
            return messages
        first = self.consumer.poll(wait)
        if first is None:
            return []
        return [first, *self.consumer.consume(self.options.batch_size - 1, 0)]

    def _check_errors(self, role: str) -> None:
        super()._check_errors(role)
        if self._down:
            self._outage = True

    def _reconnect(self, why: str) -> None:
        log.warning("stream %s: %s; reconnecting with new clients (an open transaction is aborted and its records "
                    "read again)", self.spec.deployment_id, why)
        self.close(clean=False)
        self._inbox = {INPUT: ErrorInbox(), OUTPUT: ErrorInbox()}
        self._down.clear()
        self._outage = False
        self._worker_lost = False
        self.connect()

    def _lost(self, exc: WorkerLost) -> _Reconnect:
        """A scoring worker died (kill -9, out of memory) or hung: the batch goes unproduced, nothing of it is
        committed, and the stream reconnects with new workers. Three in a row without a commit: FAILED."""
        self._workers_lost += 1
        log.warning("stream %s: %s", self.spec.deployment_id, exc)
        if self._workers_lost >= _MAX_WORKERS_LOST:
            raise StreamFailure(SCORING_WORKER_FAILED, f"{self._workers_lost} scoring workers in a row were lost "
                                                       f"without a batch committed; last: {exc}")
        self._worker_lost = True
        return _Reconnect()

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

    def _score(self, records: list[Message], serve: ProducerLike | None, lanes: Lanes | None) -> tuple[ScoredBatch,
                                                                                                       float]:
        """In the scoring thread: the batch's output values, and the seconds it took. With `serve`, polls
        that producer for delivery reports between chunks of records, while some are still due. `lanes`: the
        scorers when the batch was handed over (new ones after a reconnect are the next batches')."""
        started = time.perf_counter()
        values = [m.value() for m in records]
        if lanes is None:  # closed meanwhile (the stream ended): this batch is never produced
            raise RuntimeError("the stream's scorer is closed")
        if serve is None or len(lanes.scorers) > 1 or lanes.concurrent:
            return lanes.score(values), time.perf_counter() - started
        scorer = lanes.scorers[0]
        parts = []
        for start in range(0, len(values), _SERVE_EVERY):
            parts.append(scorer.score(values[start:start + _SERVE_EVERY]))
            if not self._reports_done.is_set():
                with contextlib.suppress(KafkaException, RuntimeError):  # closed meanwhile: nothing to serve
                    serve.poll(0)
                    if len(serve) == 0:  # every record produced is delivered (or failed) and reported
                        self._reports_done.set()
        batch = ScoredBatch([v for part in parts for v in part.values], [f for part in parts for f in part.failed])
        return batch, time.perf_counter() - started

    def _start(self, batch: _Batch, scorer: ThreadPoolExecutor,
               serve: ProducerLike | None = None) -> Future[tuple[ScoredBatch, float]]:
        if batch.scoring is None:
            batch.scoring = scorer.submit(self._score, batch.records, serve, self._lanes)
        return batch.scoring

    def _process(self, batches: list[_Batch], scorer: ThreadPoolExecutor, then: _Batch | None = None) -> None:
        """Commits batches in one transaction once scored, and starts scoring `then` once their records are
        produced; raises _Aborted (consumer rewound) or _Reconnect when it did not commit."""
        for pending in batches:
            self._start(pending, scorer)
        if then is not None and self._lanes is not None and self._lanes.concurrent:
            # Workers need no delivery reports served: `then` follows these in the scoring thread at once, so the
            # workers go from one batch to the next while this thread produces and commits.
            self._start(then, scorer)
        records: list[Message] = []
        values: list[bytes] = []
        failed: list[bool] = []
        for pending in batches:
            try:
                batch, seconds = self._start(pending, scorer).result()
            except WorkerLost as exc:  # before this batch's transaction began: nothing to abort
                raise self._lost(exc) from None
            self.metrics.scored(seconds, len(pending.records))
            records += pending.records
            values += batch.values
            failed += batch.failed
        errored = sum(failed)
        # The offsets just past the batch's records: the consumer's position is a batch ahead by now.
        ends: dict[int, int] = {}
        for message in records:  # in offset order within each partition: the last one is the highest
            partition, offset = message.partition(), message.offset()
            if partition is not None and offset is not None:
                ends[partition] = offset + 1
        offsets = [TopicPartition(self.spec.input.topic, p, end) for p, end in ends.items()]

        def produced(serve: ProducerLike | None) -> Future[tuple[ScoredBatch, float]] | None:
            return self._start(then, scorer, serve) if then is not None else None

        if self.options.exactly_once:
            self._transaction(records, values, failed, offsets, produced)
        else:
            self._deliver(records, values, failed, offsets, produced)
        self._aborts = 0
        self._workers_lost = 0
        self._down.clear()  # a commit proves both clusters reachable
        self.counts.add(len(records), errored)
        self.progress.advance(ends)
        self.metrics.committed(self.spec.deployment_id, len(records), errored,
                               dead_lettered=errored if self.spec.dead_letter_topic else 0)

    def _transaction(self, records: list[Message], values: list[bytes], failed: list[bool],
                     offsets: list[TopicPartition],
                     produced: Callable[[ProducerLike | None], Future[tuple[ScoredBatch, float]] | None]) -> None:
        deadline = time.monotonic() + self.options.unreachable_timeout
        self._delivery_error, self._delivery_topic = None, None
        try:
            self.producer.begin_transaction()
            self._reports_done.clear()
            self._produce_all(records, values, failed, deadline)
            # The next batch's scoring in this process serves the delivery reports; scoring workers leave this
            # process's GIL to this thread, which serves them itself (_await_delivery).
            remote = self._lanes is not None and self._lanes.concurrent
            scoring = produced(None if remote else self.producer)
            if scoring is not None and not remote:
                scoring.add_done_callback(lambda _: self._reports_done.set())
                self._reports_done.wait(max(0.0, deadline - time.monotonic()))
            self._await_delivery(deadline)  # what is left, if the scoring ended first (or there was none)
            group = self.consumer.consumer_group_metadata()
            self._retrying(lambda t: self.producer.send_offsets_to_transaction(offsets, group, t), deadline)
            self._retrying(self.producer.commit_transaction, deadline)
        except KafkaException as exc:
            err = error_of(exc)
            if err.fatal() or not err.txn_requires_abort():
                raise self._fatal(err) from None
            self._abort_and_rewind(err, deadline)
            raise _Aborted from None

    def _deliver(self, records: list[Message], values: list[bytes], failed: list[bool], offsets: list[TopicPartition],
                 produced: Callable[[ProducerLike | None], Future[tuple[ScoredBatch, float]] | None]) -> None:
        """StreamOptions.exactly_once=False (for measuring what exactly-once costs): produce, wait for the
        deliveries, then commit the offsets from the consumer (at least once). The next scoring starts once
        the records are produced: nothing waits on the broker after the deliveries."""
        deadline = time.monotonic() + self.options.unreachable_timeout
        self._delivery_error, self._delivery_topic = None, None
        self._produce_all(records, values, failed, deadline)
        produced(None)
        self._await_delivery(deadline)
        if self._delivery_error is not None:
            self._abort_and_rewind(self._delivery_error, deadline)
            raise _Aborted
        self.consumer.commit(offsets=offsets, asynchronous=True)

    def _await_delivery(self, deadline: float) -> None:
        """Waits until every record produced is delivered or failed (a failure is in _delivery_error)."""
        while self.producer.flush(max(0.1, min(1.0, deadline - time.monotonic()))) > 0:
            self._check_errors(INPUT)
            self._check_errors(OUTPUT)
            if self._outage:  # these clients may never deliver: new ones read the records again
                raise _Reconnect
            self._check_deadline(deadline, "delivering records")

    def _produce_all(self, records: list[Message], values: list[bytes], failed: list[bool],
                     deadline: float) -> None:
        """Every value to the output topic, in input order; with a dead-letter topic, the error records (`failed`,
        whatever their code) there instead, with headers naming where they came from. One producer, one
        transaction: each record ends up in exactly one of the two topics, and only once."""
        produce, topic, report = self.producer.produce, self.spec.output.topic, self._on_delivery
        dead, source = self.spec.dead_letter_topic, self.spec.input.topic
        for message, value, bad in zip(records, values, failed, strict=True):
            try:
                if bad and dead is not None:
                    produce(dead, value, message.key(), headers=source_headers(source, message), on_delivery=report)
                else:
                    produce(topic, value, message.key(), on_delivery=report)
            except BufferError:  # the client's queue is full
                if bad and dead is not None:
                    self._produce(dead, value, message.key(), deadline, source_headers(source, message))
                else:
                    self._produce(topic, value, message.key(), deadline)

    def _produce(self, topic: str, value: bytes, key: bytes | None, deadline: float,
                 headers: Headers | None = None) -> None:
        while True:
            try:
                if headers is None:
                    self.producer.produce(topic, value, key, on_delivery=self._on_delivery)
                else:
                    self.producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:  # the client's queue is full: let deliveries drain it
                self.producer.poll(0.05)
                self._check_deadline(deadline, "delivering records")

    def _on_delivery(self, err: KafkaError | None, message: Message) -> None:
        """A failed delivery (delivery.report.only.error: only failures call back), served by this thread or the
        scoring thread (never both at once: this one only flushes once that scoring has ended or nothing is
        left to deliver)."""
        if err is not None and self._delivery_error is None:
            self._delivery_error = err
            with contextlib.suppress(AttributeError, RuntimeError):  # which topic refused it
                self._delivery_topic = message.topic() if message is not None else None

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
            self._check_errors(INPUT)
            self._check_errors(OUTPUT)
            if self._outage:  # calling again on these clients may never return
                raise _Reconnect
            self._check_deadline(deadline, f"committing a transaction ({err.str()})")

    def _check_deadline(self, deadline: float, doing: str) -> None:
        if time.monotonic() >= deadline:
            raise failures.unreachable(OUTPUT, self.spec.output, self.options.unreachable_timeout, doing,
                                       self._secrets)

    def _abort_and_rewind(self, err: KafkaError, deadline: float) -> None:
        cause = self._delivery_error or err
        self._aborts += 1
        self.metrics.aborted(self.spec.deployment_id)
        log.warning("stream %s: %s (%s); its records are read again from the committed offsets",
                    self.spec.deployment_id, "transaction aborted" if self.options.exactly_once else
                    "records not delivered", redact(cause.str(), self._secrets))
        if self.options.exactly_once:
            try:
                self._retrying(self.producer.abort_transaction, deadline)
            except KafkaException as exc:
                raise self._fatal(error_of(exc)) from None
        self.consumer.assign(self._stored_offsets(self.partitions))
        role = DEAD_LETTER if self._delivery_topic and self._delivery_topic == self.spec.dead_letter_topic else OUTPUT
        ref = self._ref(role)
        if cause.code() in UNKNOWN_TOPIC_CODES:
            raise failures.unknown_topic(role, ref)
        if cause.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise failures.authorization_failed(role, ref, f"write to '{ref.topic}'", self._secrets)
        if self._aborts >= self.options.max_consecutive_aborts:
            raise StreamFailure(KAFKA_TRANSACTION_FAILED,
                                f"{self._aborts} transactions in a row were aborted; last error: "
                                f"{redact(cause.str(), self._secrets)}")

    # -- housekeeping -------------------------------------------------------------------------------------

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if not self._worker_lost and self._lanes is not None and (why := self._lanes.lost()) is not None:
            self._lost(WorkerLost(why))  # the next turn of the loop reconnects, with new workers
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
        lag = lag_of(self.consumer)  # from what the fetches carried: no broker round trip (engine/position.py)
        if lag is not None:
            self.metrics.lag(self.spec.deployment_id, lag)
            self.progress.set_lag(lag)

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

