"""The runner's transaction logic against fake Kafka clients: commit, abort and rewind, retry, fencing,
authentication errors. The same paths against the real broker are in tests/integration/test_engine_streams.py."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID, OFFSET_STORED, KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from wml_server.engine import FAILED, RUNNING, STOPPED, Engine, KafkaEndpoint, KafkaTopic, StreamOptions, StreamSpec
from wml_server.engine.clients import ConsumerLike, ProducerLike
from wml_server.models.sentiment import SentimentModel

PASSWORD = "hunter2-password"
MODEL = SentimentModel()


@dataclass
class FakeMessage:
    _key: bytes | None
    _value: bytes | None
    _partition: int
    _offset: int
    _error: KafkaError | None = None

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> KafkaError | None:
        return self._error


@dataclass
class FakeCluster:
    """What the broker keeps: input records, committed output, the group's committed offsets."""

    topics: dict[str, int] = field(default_factory=dict)  # name -> partitions
    input: dict[int, list[FakeMessage]] = field(default_factory=dict)
    output: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    # committed records of every other topic (the dead-letter topic): (topic, key, value, headers)
    elsewhere: list[tuple[str, bytes | None, bytes | None, Any]] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)
    commit_errors: list[KafkaError] = field(default_factory=list)
    delivery_errors: list[KafkaError] = field(default_factory=list)
    init_errors: list[KafkaError] = field(default_factory=list)
    aborts: int = 0
    commits: int = 0
    commit_offsets: list[dict[int, int]] = field(default_factory=list)  # what each commit committed
    assigns: list[list[tuple[int, int]]] = field(default_factory=list)
    error_cbs: list[Callable[[KafkaError], None]] = field(default_factory=list)
    reachable: bool = True
    generation: int = 0  # producers made before the last outage carry an older one
    probes_while_down: int = 0  # metadata requests made while unreachable

    def add(self, partition: int, *values: bytes) -> None:
        log = self.input.setdefault(partition, [])
        for value in values:
            log.append(FakeMessage(f"k{partition}-{len(log)}".encode(), value, partition, len(log)))

    def metadata(self, topic: str | None) -> Any:
        if not self.reachable:
            self.probes_while_down += 1
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))
        name = topic or ""
        if name in self.topics:
            meta = SimpleNamespace(partitions={p: None for p in range(self.topics[name])}, error=None)
        else:
            meta = SimpleNamespace(partitions={}, error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
        return SimpleNamespace(topics={name: meta})


class FakeConsumer:
    def __init__(self, cluster: FakeCluster, topic: str) -> None:
        self.cluster, self.topic = cluster, topic
        self.positions: dict[int, int] = {}

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = {}
        self.incremental_assign(partitions)

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.cluster.assigns.append([(tp.partition, tp.offset) for tp in partitions])
        for tp in partitions:
            # Explicit at connect (engine/position.py); the group's committed offset on a rewind.
            stored = tp.offset == OFFSET_STORED
            self.positions[tp.partition] = self.cluster.committed.get(tp.partition, 0) if stored else tp.offset

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        return [TopicPartition(self.topic, tp.partition, self.cluster.committed.get(tp.partition, OFFSET_INVALID))
                for tp in partitions]

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in self.positions]

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        batch: list[Any] = []
        for p, position in self.positions.items():
            taken = self.cluster.input.get(p, [])[position:position + num_messages - len(batch)]
            batch += taken
            self.positions[p] = position + len(taken)
        if not batch:
            time.sleep(max(0.0, min(timeout, 0.01)))
        return batch

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, tp.partition, self.positions[tp.partition]) for tp in partitions]

    def consumer_group_metadata(self) -> Any:
        return "group-metadata"

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = -1,
                              cached: bool = False) -> tuple[int, int]:
        return 0, len(self.cluster.input.get(partition.partition, []))

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        return self.cluster.metadata(topic)

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        """Without exactly-once: the consumer commits its own offsets; synchronously: a stream's start."""
        self.cluster.committed.update({tp.partition: tp.offset for tp in offsets})
        if asynchronous:
            self.cluster.commit_offsets.append({tp.partition: tp.offset for tp in offsets})

    def poll(self, timeout: float = -1) -> Any:
        """One record, as soon as there is one (what the real one does; it serves callbacks too)."""
        batch = self.consume(1, timeout)
        return batch[0] if batch else None

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self, cluster: FakeCluster, transactional: bool = True) -> None:
        self.cluster = cluster
        self.transactional = transactional
        self.generation = cluster.generation
        self.pending: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.offsets: dict[int, int] = {}
        self.deliveries: list[Callable[..., None]] = []

    def init_transactions(self, timeout: float = -1) -> None:
        if self.cluster.init_errors:
            raise KafkaException(self.cluster.init_errors.pop(0))

    def begin_transaction(self) -> None:
        self.pending, self.offsets = [], {}

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                headers: Any = None, on_delivery: Any = None) -> None:
        if self.cluster.delivery_errors and on_delivery is not None:
            on_delivery(self.cluster.delivery_errors[0], SimpleNamespace(topic=lambda: topic))
        elif not self.transactional:
            self._deliver([(topic, key, value, headers)])  # delivered at once; no transaction holds it back
            return
        self.pending.append((topic, key, value, headers))

    def _deliver(self, records: list[tuple[str, bytes | None, bytes | None, Any]]) -> None:
        for topic, key, value, headers in records:
            if topic == "out":
                self.cluster.output.append((key, value))
            else:
                self.cluster.elsewhere.append((topic, key, value, headers))

    def send_offsets_to_transaction(self, positions: list[TopicPartition], group_metadata: Any,
                                    timeout: float = -1) -> None:
        assert group_metadata == "group-metadata"
        if self.generation != self.cluster.generation:  # librdkafka may never return (issues #5456, #5511)
            raise RuntimeError("send_offsets_to_transaction on a producer that lived through an outage")
        self.offsets = {tp.partition: tp.offset for tp in positions}

    def commit_transaction(self, timeout: float = -1) -> None:
        if self.cluster.commit_errors:
            raise KafkaException(self.cluster.commit_errors.pop(0))
        self._deliver(self.pending)
        self.cluster.committed.update(self.offsets)
        self.cluster.commits += 1
        self.cluster.commit_offsets.append(dict(self.offsets))
        self.pending, self.offsets = [], {}

    def abort_transaction(self, timeout: float = -1) -> None:
        self.cluster.aborts += 1
        self.pending, self.offsets = [], {}

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        return self.cluster.metadata(topic)

    def poll(self, timeout: float = -1) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        return 0

    def __len__(self) -> int:
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        self.pending = []

    def close(self) -> bool:
        return True


class FakeClients:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def consumer(self, config: dict[str, Any]) -> ConsumerLike:
        self.cluster.error_cbs.append(config["error_cb"])
        assert config["isolation.level"] == "read_committed"
        assert config["enable.auto.commit"] is False
        return FakeConsumer(self.cluster, "in")

    def producer(self, config: dict[str, Any]) -> ProducerLike:
        self.cluster.error_cbs.append(config["error_cb"])
        if "transactional.id" not in config:  # StreamOptions(exactly_once=False)
            assert config["enable.idempotence"] is True
            return FakeProducer(self.cluster, transactional=False)
        assert config["transactional.id"].startswith("wml-")
        return FakeProducer(self.cluster)


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster(topics={"in": 1, "out": 1})


@pytest.fixture
def changes() -> list[tuple[str, str, list[tuple[str, str]]]]:
    return []


@pytest.fixture
def engine(cluster: FakeCluster, changes: list[tuple[str, str, list[tuple[str, str]]]]) -> Any:
    eng = Engine(on_status_change=lambda d, s, e: changes.append((d, s, e)), registry=CollectorRegistry(),
                 options=StreamOptions(batch_size=10, batch_timeout=0.01, unreachable_timeout=2.0),
                 clients=FakeClients(cluster))
    yield eng
    eng.shutdown(timeout=10)


def spec() -> StreamSpec:
    conn = KafkaEndpoint(["fake:9093"], user="wml", password=PASSWORD, security_protocol="SASL_PLAINTEXT")
    return StreamSpec(str(uuid.uuid4()), MODEL, KafkaTopic("in", conn), KafkaTopic("out", conn))


def tweets(n: int) -> list[bytes]:
    return [b'{"tweet": "I love it"}'] * n


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def run_until_output(engine: Engine, cluster: FakeCluster, count: int) -> StreamSpec:
    s = spec()
    engine.start(s)
    wait_until(lambda: len(cluster.output) >= count)
    assert engine.stop(s.deployment_id, timeout=10)
    return s


def test_records_go_out_with_their_keys_and_offsets_commit_with_them(engine: Engine, cluster: FakeCluster,
                                                                    changes: list[Any]) -> None:
    cluster.add(0, *tweets(25), b"not json")
    s = run_until_output(engine, cluster, 26)
    assert [k for k, _ in cluster.output] == [f"k0-{i}".encode() for i in range(26)]
    assert cluster.committed == {0: 26}
    state = engine.status(s.deployment_id)
    assert state is not None
    assert state.status == STOPPED
    assert (state.records_in, state.records_out, state.records_errored) == (26, 26, 1)
    assert [c[1] for c in changes] == ["INITIALIZING", "RUNNING", "STOPPED"]
    assert engine.registry.get_sample_value("wml_stream_records_errored_total",
                                            {"deployment_id": s.deployment_id}) == 1


def test_an_abortable_error_rewinds_to_the_committed_offsets(engine: Engine, cluster: FakeCluster) -> None:
    cluster.add(0, *tweets(30))
    cluster.commit_errors = [KafkaError(KafkaError._INCONSISTENT, "abortable", txn_requires_abort=True)]
    s = run_until_output(engine, cluster, 30)
    assert cluster.aborts == 1
    assert [k for k, _ in cluster.output] == [f"k0-{i}".encode() for i in range(30)]  # nothing lost or doubled
    assert cluster.assigns[1] == [(0, OFFSET_STORED)]  # the rewind: back to the group's committed offset
    state = engine.status(s.deployment_id)
    assert state is not None
    assert state.records_in == 30
    assert engine.registry.get_sample_value("wml_stream_transactions_aborted_total",
                                            {"deployment_id": s.deployment_id}) == 1


def test_a_retriable_commit_is_called_again(engine: Engine, cluster: FakeCluster) -> None:
    cluster.add(0, *tweets(5))
    cluster.commit_errors = [KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)] * 2
    run_until_output(engine, cluster, 5)
    assert cluster.aborts == 0
    assert len(cluster.output) == 5
    assert cluster.committed == {0: 5}


def test_fencing_is_fatal(engine: Engine, cluster: FakeCluster) -> None:
    cluster.add(0, *tweets(5))
    cluster.commit_errors = [KafkaError(KafkaError._FENCED, "fenced", fatal=True)]
    s = spec()
    engine.start(s)
    state = engine.wait_for(s.deployment_id, [FAILED], timeout=10)
    assert state is not None
    assert state.status == FAILED
    assert state.errors[0][0] == "kafka_producer_fenced"
    assert cluster.output == []
    assert cluster.committed == {0: 0}  # only the start the connect committed: no transaction did


def test_aborts_in_a_row_end_in_failed(engine: Engine, cluster: FakeCluster) -> None:
    cluster.add(0, *tweets(5))
    cluster.commit_errors = [KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large", txn_requires_abort=True)] * 9
    s = spec()
    engine.start(s)
    state = engine.wait_for(s.deployment_id, [FAILED], timeout=10)
    assert state is not None
    assert state.errors[0][0] == "kafka_transaction_failed", state
    assert cluster.aborts == StreamOptions.max_consecutive_aborts
    assert cluster.output == []


def test_a_deleted_output_topic_is_named(engine: Engine, cluster: FakeCluster) -> None:
    cluster.add(0, *tweets(5))
    cluster.delivery_errors = [KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "unknown topic")]
    cluster.commit_errors = [KafkaError(KafkaError._INCONSISTENT, "abortable", txn_requires_abort=True)]
    s = spec()
    engine.start(s)
    state = engine.wait_for(s.deployment_id, [FAILED], timeout=10)
    assert state is not None
    assert state.errors[0][0] == "kafka_unknown_topic"
    assert "'out'" in state.errors[0][1]


def test_an_authentication_error_fails_without_the_password(engine: Engine, cluster: FakeCluster,
                                                            changes: list[Any]) -> None:
    s = spec()
    engine.start(s)
    wait_until(lambda: len(cluster.error_cbs) == 2)
    state = engine.wait_for(s.deployment_id, [RUNNING], timeout=10)
    cluster.error_cbs[0](KafkaError(KafkaError._AUTHENTICATION, f"SASL authentication error: {PASSWORD} refused"))
    state = engine.wait_for(s.deployment_id, [FAILED], timeout=10)
    assert state is not None
    assert state.errors[0][0] == "kafka_authentication_failed"
    assert PASSWORD not in state.errors[0][1]
    assert "fake:9093" in state.errors[0][1]
    assert PASSWORD not in repr(changes)


def test_init_transactions_is_retried_while_retriable(engine: Engine, cluster: FakeCluster) -> None:
    cluster.add(0, *tweets(3))
    cluster.init_errors = [KafkaError(KafkaError._TIMED_OUT, "coordinator loading", retriable=True)] * 3
    run_until_output(engine, cluster, 3)
    assert cluster.init_errors == []


def test_stop_then_start_resumes_where_it_stopped(engine: Engine, cluster: FakeCluster) -> None:
    cluster.add(0, *tweets(10))
    s = run_until_output(engine, cluster, 10)
    cluster.add(0, *tweets(10))
    engine.start(s)
    wait_until(lambda: len(cluster.output) >= 20)
    assert engine.stop(s.deployment_id, timeout=10)
    assert [k for k, _ in cluster.output] == [f"k0-{i}".encode() for i in range(20)]
    state = engine.status(s.deployment_id)
    assert state is not None
    assert state.records_in == 20


def test_start_is_idempotent_and_remove_is_silent(engine: Engine, cluster: FakeCluster, changes: list[Any]) -> None:
    s = spec()
    engine.start(s)
    engine.start(s)
    assert engine.wait_for(s.deployment_id, [RUNNING], timeout=10) is not None
    threads = [t for t in threading.enumerate() if t.name.startswith("wml-stream-")]
    assert len(threads) == 1
    assert engine.remove(s.deployment_id, timeout=10)
    assert engine.status(s.deployment_id) is None
    assert [c[1] for c in changes] == ["INITIALIZING", "RUNNING"]  # no STOPPED after remove
    assert engine.registry.get_sample_value("wml_stream_records_in_total", {"deployment_id": s.deployment_id}) is None


def test_a_restart_waits_for_the_runner_still_stopping(engine: Engine, cluster: FakeCluster) -> None:
    cluster.add(0, *tweets(50))
    s = spec()
    engine.start(s)
    engine.wait_for(s.deployment_id, [RUNNING], timeout=10)
    assert engine.stop(s.deployment_id, timeout=0) in (True, False)  # do not wait for it
    engine.start(s)
    wait_until(lambda: len(cluster.output) >= 50)
    assert engine.stop(s.deployment_id, timeout=10)
    assert len(cluster.output) == 50
    assert len({k for k, _ in cluster.output}) == 50


def test_brokers_down_for_longer_than_the_timeout_fail_the_stream(
        engine: Engine, cluster: FakeCluster, changes: list[tuple[str, str, list[tuple[str, str]]]]) -> None:
    s = spec()
    engine.start(s)
    engine.wait_for(s.deployment_id, [RUNNING], timeout=10)
    cluster.reachable = False
    cluster.error_cbs[0](KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    state = engine.wait_for(s.deployment_id, [FAILED], timeout=10)
    assert state is not None
    assert state.status == FAILED, state
    assert state.errors[0][0] == "kafka_unreachable"
    assert "fake:9093" in state.errors[0][1]
    # It gave up only after the timeout it is configured with (2 s here) and after asking the brokers again:
    # once when they went down, and once more at the deadline, rather than failing on the first error.
    assert "could be reached for 2 s" in state.errors[0][1]
    assert cluster.probes_while_down >= 2
    assert [status for d, status, _ in changes if d == s.deployment_id] == ["INITIALIZING", RUNNING, FAILED]


def test_brokers_back_within_the_timeout_keep_the_stream_running(
        engine: Engine, cluster: FakeCluster, changes: list[tuple[str, str, list[tuple[str, str]]]]) -> None:
    s = spec()
    engine.start(s)
    engine.wait_for(s.deployment_id, [RUNNING], timeout=10)
    cluster.reachable = False
    cluster.error_cbs[1](KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    wait_until(lambda: cluster.probes_while_down >= 1)  # the stream noticed the outage and asked the brokers
    cluster.reachable = True
    wait_until(lambda: len(cluster.error_cbs) == 4)  # a later probe found them back: new consumer and producer
    cluster.add(0, *tweets(3))
    wait_until(lambda: len(cluster.output) == 3)
    state = engine.status(s.deployment_id)
    assert state is not None
    assert state.status == RUNNING, state
    assert [status for d, status, _ in changes if d == s.deployment_id] == ["INITIALIZING", RUNNING]


def test_clients_that_lived_through_an_outage_are_replaced(engine: Engine, cluster: FakeCluster) -> None:
    s = spec()
    engine.start(s)
    cluster.add(0, *tweets(5))
    wait_until(lambda: len(cluster.output) == 5)
    cluster.reachable = False
    cluster.generation += 1
    cluster.error_cbs[0](KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    cluster.add(0, *tweets(5))
    wait_until(lambda: cluster.probes_while_down >= 1)  # the stream noticed the outage and asked the brokers
    cluster.reachable = True
    wait_until(lambda: len(cluster.output) == 10)
    state = engine.status(s.deployment_id)
    assert state is not None
    assert state.status == RUNNING, state
    assert len(cluster.error_cbs) == 4  # a new consumer and a new producer
    assert [k for k, _ in cluster.output] == [f"k0-{i}".encode() for i in range(10)]


def test_stopping_a_failed_deployment_makes_it_stopped(engine: Engine, cluster: FakeCluster) -> None:
    cluster.topics.pop("out")
    s = spec()
    engine.start(s)
    state = engine.wait_for(s.deployment_id, [FAILED], timeout=10)
    assert state is not None
    assert state.errors[0][0] == "kafka_unknown_topic"
    assert engine.stop(s.deployment_id)
    state = engine.status(s.deployment_id)
    assert state is not None
    assert state.status == STOPPED
    assert state.errors == []


def test_lag_is_the_high_watermark_minus_the_position(cluster: FakeCluster) -> None:
    from wml_server.engine.metrics import EngineMetrics
    from wml_server.engine.session import StreamSession
    from wml_server.engine.state import StreamCounts

    cluster.add(0, *tweets(30))
    metrics = EngineMetrics()
    s = spec()
    session = StreamSession(s, StreamOptions(), FakeClients(cluster), threading.Event(), metrics, StreamCounts())
    session.connect()
    assert len(session.consumer.consume(10, 0)) == 10
    session._refresh_lag()
    assert metrics.registry.get_sample_value("wml_stream_consumer_lag", {"deployment_id": s.deployment_id}) == 20
    session.close(clean=True)


def test_a_caught_up_stream_takes_a_record_as_it_comes_not_after_a_full_batch_wait(cluster: FakeCluster) -> None:
    """consume(batch, wait) would wait the whole `wait` for a full batch, below the batch rate every time: the
    session never waits for more than one record, and takes what came with it."""
    from wml_server.engine.metrics import EngineMetrics
    from wml_server.engine.session import StreamSession
    from wml_server.engine.state import StreamCounts

    calls: list[tuple[str, int, float]] = []
    arriving: list[bytes] = []  # records that arrive while the consumer waits in poll()

    class Recording(FakeConsumer):
        def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
            calls.append(("consume", num_messages, timeout))
            return super().consume(num_messages, timeout)

        def poll(self, timeout: float = -1) -> Any:
            calls.append(("poll", 1, timeout))
            cluster.add(0, *arriving)
            arriving.clear()
            batch = FakeConsumer.consume(self, 1, 0)
            return batch[0] if batch else None

    class Clients(FakeClients):
        def consumer(self, config: dict[str, Any]) -> ConsumerLike:
            super().consumer(config)
            return Recording(self.cluster, "in")

    session = StreamSession(spec(), StreamOptions(batch_size=10, batch_timeout=5.0), Clients(cluster),
                            threading.Event(), EngineMetrics(), StreamCounts())
    session.connect()
    calls.clear()
    cluster.add(0, *tweets(3))
    assert [m.offset() for m in session._fetch(5.0)] == [0, 1, 2]  # fetched already: taken without waiting
    assert calls == [("consume", 10, 0)]
    calls.clear()
    assert session._fetch(0.0) == []  # nothing, and no time to wait: nothing waited for
    assert calls == [("consume", 10, 0)]
    calls.clear()
    arriving.extend(tweets(4))
    assert [m.offset() for m in session._fetch(5.0)] == [3, 4, 5, 6]  # the first to come, and what came with it
    assert calls == [("consume", 10, 0), ("poll", 1, 5.0), ("consume", 9, 0)]
    session.close(clean=True)


def test_a_backlog_runs_in_full_batches_each_committing_its_own_records(engine: Engine, cluster: FakeCluster) -> None:
    """With records waiting, each full batch scores while the one before it commits; the commit carries the
    offsets just past its own records (the consumer is a batch ahead by then), and the partial batch at the end
    goes out with the one before it."""
    cluster.add(0, *tweets(95))  # batches of 10 (the engine fixture's)
    run_until_output(engine, cluster, 95)
    assert [k for k, _ in cluster.output] == [f"k0-{i}".encode() for i in range(95)]  # in order, once each
    assert cluster.commit_offsets == [{0: n} for n in (10, 20, 30, 40, 50, 60, 70, 80, 95)]


def test_without_exactly_once_records_go_out_and_the_consumer_commits(cluster: FakeCluster) -> None:
    """StreamOptions(exactly_once=False), what bench/stream_throughput.py --eos off measures: no transaction,
    the consumer commits a batch's offsets once its records are delivered."""
    eng = Engine(registry=CollectorRegistry(), clients=FakeClients(cluster),
                 options=StreamOptions(batch_size=10, batch_timeout=0.01, unreachable_timeout=2.0,
                                       exactly_once=False))
    try:
        cluster.add(0, *tweets(25))
        run_until_output(eng, cluster, 25)
        assert [k for k, _ in cluster.output] == [f"k0-{i}".encode() for i in range(25)]
        assert cluster.commits == 0  # no transaction committed
        assert cluster.committed == {0: 25}
    finally:
        eng.shutdown(timeout=10)


def test_without_exactly_once_a_deleted_output_topic_is_named(cluster: FakeCluster) -> None:
    eng = Engine(registry=CollectorRegistry(), clients=FakeClients(cluster),
                 options=StreamOptions(batch_size=10, batch_timeout=0.01, unreachable_timeout=2.0,
                                       exactly_once=False))
    try:
        cluster.add(0, *tweets(5))
        cluster.delivery_errors = [KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "unknown topic")]
        s = spec()
        eng.start(s)
        state = eng.wait_for(s.deployment_id, [FAILED], timeout=10)
        assert state is not None
        assert state.errors[0][0] == "kafka_unknown_topic"
        assert cluster.committed == {0: 0}  # the start only: nothing delivered: read again at the next start
    finally:
        eng.shutdown(timeout=10)


def dead_letter_spec() -> StreamSpec:
    return replace(spec(), dead_letter_topic="dead")


@pytest.mark.parametrize("exactly_once", [True, False])
def test_errored_records_go_to_the_dead_letter_topic_in_the_same_transaction(
        cluster: FakeCluster, exactly_once: bool) -> None:
    cluster.topics["dead"] = 1
    bad = [b"not json", b"[1, 2]", b'{"id": 3}', None]
    cluster.add(0, b'{"tweet": "I love it"}', bad[0], b'{"tweet": "I hate it"}', bad[1], bad[2], bad[3],
                *tweets(4))
    eng = Engine(on_status_change=lambda *_: None, registry=CollectorRegistry(),
                 options=StreamOptions(batch_size=10, batch_timeout=0.01, unreachable_timeout=2.0,
                                       exactly_once=exactly_once), clients=FakeClients(cluster))
    try:
        s = dead_letter_spec()
        eng.start(s)
        wait_until(lambda: len(cluster.output) + len(cluster.elsewhere) >= 10)
        assert eng.stop(s.deployment_id, timeout=10)
        # Each record once, in one of the two topics; the output keeps the input's order.
        assert [k for k, _ in cluster.output] == [b"k0-0", b"k0-2", *(f"k0-{i}".encode() for i in range(6, 10))]
        assert all("prediction" in json.loads(v or b"") for _, v in cluster.output)
        assert [(t, k) for t, k, _, _ in cluster.elsewhere] == [("dead", f"k0-{i}".encode()) for i in (1, 3, 4, 5)]
        assert [json.loads(v or b"")["error"] for _, _, v, _ in cluster.elsewhere] == [
            "invalid_json", "not_an_object", "missing_text", "invalid_json"]
        assert cluster.elsewhere[0][3] == [("wml.source.topic", b"in"), ("wml.source.partition", b"0"),
                                           ("wml.source.offset", b"1")]
        assert cluster.committed == {0: 10}
        state = eng.status(s.deployment_id)
        assert state is not None
        assert (state.records_in, state.records_out, state.records_errored) == (10, 10, 4)
        sample = eng.registry.get_sample_value
        assert sample("wml_stream_records_dead_lettered_total", {"deployment_id": s.deployment_id}) == 4
        assert sample("wml_stream_records_errored_total", {"deployment_id": s.deployment_id}) == 4
    finally:
        eng.shutdown(timeout=10)


def test_without_a_dead_letter_topic_nothing_is_dead_lettered(engine: Engine, cluster: FakeCluster) -> None:
    cluster.add(0, b"not json", *tweets(2))
    s = run_until_output(engine, cluster, 3)
    assert cluster.elsewhere == []
    assert engine.registry.get_sample_value("wml_stream_records_dead_lettered_total",
                                            {"deployment_id": s.deployment_id}) == 0


def test_a_missing_dead_letter_topic_fails_the_stream_naming_it(engine: Engine, cluster: FakeCluster) -> None:
    cluster.add(0, *tweets(3))
    s = dead_letter_spec()
    engine.start(s)
    state = engine.wait_for(s.deployment_id, [FAILED], timeout=10)
    assert state is not None
    assert state.errors[0][0] == "kafka_unknown_topic"
    assert "'dead'" in state.errors[0][1]
    assert "output connection" in state.errors[0][1]
    assert cluster.output == []


def test_a_deleted_dead_letter_topic_is_named(engine: Engine, cluster: FakeCluster) -> None:
    cluster.topics["dead"] = 1
    cluster.add(0, b"not json")
    cluster.delivery_errors = [KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "unknown topic")]
    cluster.commit_errors = [KafkaError(KafkaError._INCONSISTENT, "abortable", txn_requires_abort=True)]
    s = dead_letter_spec()
    engine.start(s)
    state = engine.wait_for(s.deployment_id, [FAILED], timeout=10)
    assert state is not None
    assert state.errors[0][0] == "kafka_unknown_topic"
    assert "dead-letter topic 'dead'" in state.errors[0][1]
