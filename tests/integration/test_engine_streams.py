"""The stream engine against the real local Kafka broker: scoring end to end, exactly once across stop,
start, a SIGKILL and a zombie producer, and FAILED with a clear reason when the stream cannot run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from prometheus_client import CollectorRegistry

from tests.support import alive, children_running
from wml_localplatform import KafkaInfo
from wml_server.engine import FAILED, RUNNING, STOPPED, Engine, KafkaEndpoint, KafkaTopic, StreamOptions, StreamSpec
from wml_server.engine.state import KAFKA_TRANSACTION_FAILED
from wml_server.models.sentiment import SentimentModel

ROOT = Path(__file__).resolve().parents[2]
MODEL = SentimentModel()
TWEETS = ["I love this phone, it is amazing!", "This is the worst service ever, I hate it.",
          "Great game tonight :)", "Terrible traffic again, so angry", "Just landed in Paris"]


class _Quiet:
    def log(self, *args: object) -> None:
        pass


def config(kafka: KafkaInfo, extra: dict[str, Any] | None = None, user: str | None = None) -> dict[str, Any]:
    """A client configuration for one of the broker's users, librdkafka's own logging silenced."""
    settings: dict[str, Any] = {"logger": _Quiet(), **(extra or {})}
    return kafka.client_config(user, **settings)


def endpoint(kafka: KafkaInfo, user: str = "wml", password: str | None = None) -> KafkaEndpoint:
    return KafkaEndpoint(brokers=[kafka.bootstrap], user=user, password=password or kafka.user(user).password,
                         security_protocol="SASL_PLAINTEXT", sasl_mechanism=kafka.sasl_mechanism)


def spec_for(kafka: KafkaInfo, source: str, target: str, deployment_id: str | None = None,
             connection: KafkaEndpoint | None = None) -> StreamSpec:
    conn = connection or endpoint(kafka)
    return StreamSpec(deployment_id or str(uuid.uuid4()), MODEL, KafkaTopic(source, conn), KafkaTopic(target, conn))


def produce(kafka: KafkaInfo, topic: str, first: int, count: int, value: Callable[[int], bytes] | None = None) -> None:
    producer = Producer(config(kafka, {"linger.ms": 5}))
    for i in range(first, first + count):
        body = value(i) if value else json.dumps({"tweet": TWEETS[i % len(TWEETS)], "n": i}).encode()
        producer.produce(topic, body, key=f"k{i}".encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def end_offsets(kafka: KafkaInfo, topic: str, committed: bool = True) -> dict[int, int]:
    """Per partition: the last stable offset (committed=True) or the high watermark."""
    admin = AdminClient(config(kafka))
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    level = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    futures = admin.list_offsets({TopicPartition(topic, p): latest for p in partitions},
                                 isolation_level=level, request_timeout=10)
    return {tp.partition: f.result(10).offset for tp, f in futures.items()}


def committed_offsets(kafka: KafkaInfo, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer(config(kafka, {"group.id": group, "isolation.level": "read_committed",
                                               "logger": _Quiet()}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {tp.partition: tp.offset
                for tp in consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)}
    finally:
        consumer.close()


class Reader:
    """Reads a topic from the beginning as a read_committed client does (what downstream apps see)."""

    def __init__(self, kafka: KafkaInfo, topic: str, isolation: str = "read_committed") -> None:
        self.kafka, self.topic = kafka, topic
        self.consumer = Consumer(config(kafka, {
            "group.id": f"reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "isolation.level": isolation}))
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.records: list[tuple[bytes, dict[str, Any]]] = []

    def _read(self) -> None:
        for message in self.consumer.consume(500, 0.2):
            assert message.error() is None, message.error()
            key, value = message.key(), message.value()
            assert key is not None
            assert value is not None
            self.records.append((key, json.loads(value)))

    def until(self, count: int, timeout: float) -> list[tuple[bytes, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while len(self.records) < count and time.monotonic() < deadline:
            self._read()
        return self.records

    def to_end(self, timeout: float = 30) -> list[tuple[bytes, dict[str, Any]]]:
        """Everything committed so far: reads until every partition's position passes its stable offset."""
        ends = end_offsets(self.kafka, self.topic)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = {tp.partition: tp.offset for tp in self.consumer.position(self.consumer.assignment())}
            if all(positions.get(p, -1) >= end for p, end in ends.items()):
                return self.records
            self._read()
        raise AssertionError(f"did not reach the end of {self.topic} ({ends}) within {timeout} s")

    def keys(self) -> Counter[bytes]:
        return Counter(key for key, _ in self.records)

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def reader(kafka: KafkaInfo) -> Iterator[Callable[..., Reader]]:
    made: list[Reader] = []

    def make(topic: str, isolation: str = "read_committed") -> Reader:
        made.append(Reader(kafka, topic, isolation))
        return made[-1]

    yield make
    for r in made:
        r.close()


Change = tuple[str, str, list[tuple[str, str]]]


@pytest.fixture
def changes() -> list[Change]:
    """Every on_status_change call of the test's engine."""
    return []


@pytest.fixture
def engine(changes: list[Change]) -> Iterator[Engine]:
    eng = Engine(on_status_change=lambda d, s, e: changes.append((d, s, e)), registry=CollectorRegistry(),
                 options=StreamOptions(unreachable_timeout=5.0, lag_interval=0.2))
    yield eng
    eng.shutdown(timeout=30)


def expect_keys(keys: Counter[bytes], first: int, count: int) -> None:
    wanted = {f"k{i}".encode() for i in range(first, first + count)}
    missing = wanted - set(keys)
    repeated = {k: n for k, n in keys.items() if n > 1}
    assert not missing, f"{len(missing)} records never scored, e.g. {sorted(missing)[:5]}"
    assert not repeated, f"{len(repeated)} records scored more than once, e.g. {list(repeated.items())[:5]}"
    assert set(keys) == wanted


def running(engine: Engine, deployment_id: str, timeout: float = 30) -> None:
    state = engine.wait_for(deployment_id, [RUNNING, FAILED], timeout)
    assert state is not None
    assert state.status == RUNNING, state


def test_records_are_scored_end_to_end(kafka: KafkaInfo, kafka_topic: Callable[..., str], engine: Engine,
                                       reader: Callable[..., Reader], changes: list[Change]) -> None:
    source, target = kafka_topic("in"), kafka_topic("out")
    produce(kafka, source, 0, 200)
    spec = spec_for(kafka, source, target)
    engine.start(spec)
    running(engine, spec.deployment_id)

    out = reader(target)
    out.until(200, timeout=30)
    out.to_end()
    expect_keys(out.keys(), 0, 200)
    for key, record in out.records:
        n = int(key[1:])
        assert record["n"] == n
        assert record["tweet"] == TWEETS[n % len(TWEETS)]
        assert record["prediction"] in ("POSITIVE", "NEGATIVE")
        assert 0.5 <= record["probability"] <= 1.0
    by_text = {r["tweet"]: r["prediction"] for _, r in out.records}
    assert by_text[TWEETS[0]] == "POSITIVE"
    assert by_text[TWEETS[1]] == "NEGATIVE"

    state = engine.status(spec.deployment_id)
    assert state is not None
    assert (state.records_in, state.records_out, state.records_errored) == (200, 200, 0)
    labels = {"deployment_id": spec.deployment_id}
    assert engine.registry.get_sample_value("wml_stream_records_in_total", labels) == 200
    assert engine.registry.get_sample_value("wml_stream_records_out_total", labels) == 200
    assert engine.registry.get_sample_value("wml_stream_scoring_seconds_count") is not None
    assert [c[1] for c in changes] == ["INITIALIZING", "RUNNING"]


def test_stop_commits_and_start_resumes_exactly_once(kafka: KafkaInfo, kafka_topic: Callable[..., str],
                                                      engine: Engine, reader: Callable[..., Reader]) -> None:
    source, target = kafka_topic("in"), kafka_topic("out")
    produce(kafka, source, 0, 20_000)
    spec = spec_for(kafka, source, target)
    engine.start(spec)
    running(engine, spec.deployment_id)
    out = reader(target)
    out.until(300, timeout=30)
    assert engine.stop(spec.deployment_id, timeout=30), "stop did not finish within 30 s"
    state = engine.status(spec.deployment_id)
    assert state is not None
    assert state.status == STOPPED

    # What was committed downstream and the group's offset agree: the batch in flight was committed whole.
    scored = len(out.to_end())
    assert 0 < scored < 20_000, "the stop should land mid-stream"
    assert committed_offsets(kafka, spec.group_id, source) == {0: scored}
    assert state.records_in == scored

    produce(kafka, source, 20_000, 100)
    time.sleep(1.0)  # a stopped deployment must not read: give a wrongly running one the time to
    assert committed_offsets(kafka, spec.group_id, source) == {0: scored}
    assert len(out.to_end()) == scored

    engine.start(spec)
    running(engine, spec.deployment_id)
    lags = []
    deadline = time.monotonic() + 60
    while len(out.until(20_100, timeout=0.2)) < 20_100 and time.monotonic() < deadline:
        lags.append(engine.registry.get_sample_value("wml_stream_consumer_lag",
                                                     {"deployment_id": spec.deployment_id}))
    assert max(lag or 0 for lag in lags) > 0, "the lag gauge should show the backlog while it is caught up"
    assert engine.stop(spec.deployment_id, timeout=30)
    out.to_end()
    expect_keys(out.keys(), 0, 20_100)
    assert committed_offsets(kafka, spec.group_id, source) == {0: 20_100}


def test_bad_records_go_out_with_an_error_and_the_stream_goes_on(
        kafka: KafkaInfo, kafka_topic: Callable[..., str], engine: Engine, reader: Callable[..., Reader]) -> None:
    source, target = kafka_topic("in"), kafka_topic("out")
    huge = json.dumps({"tweet": "I love it " * 104_000}).encode()  # over 1 MB, under the broker's limit
    bad = [b"\xff\xfe garbage", b'{"tweet": "no end', b"[1, 2, 3]", b'{"user": "no text"}', huge]
    produce(kafka, source, 0, 10)
    producer = Producer(config(kafka, {"message.max.bytes": 1_048_576}))
    for i, value in enumerate(bad):
        producer.produce(source, value, key=f"k{10 + i}".encode())
    assert producer.flush(30) == 0
    produce(kafka, source, 15, 10)
    spec = spec_for(kafka, source, target)
    engine.start(spec)
    out = reader(target)
    out.until(25, timeout=30)
    assert engine.stop(spec.deployment_id, timeout=30)
    expect_keys(Counter(key for key, _ in out.to_end()), 0, 25)
    errors = {key: record["error"] for key, record in out.records if "error" in record}
    assert errors == {b"k10": "invalid_json", b"k11": "invalid_json", b"k12": "not_an_object",
                      b"k13": "missing_text", b"k14": "record_too_large"}
    state = engine.status(spec.deployment_id)
    assert state is not None
    assert (state.records_in, state.records_errored) == (25, 5)


def test_two_partitions(kafka: KafkaInfo, kafka_topic: Callable[..., str], engine: Engine,
                        reader: Callable[..., Reader]) -> None:
    source, target = kafka_topic("in", partitions=2), kafka_topic("out", partitions=2)
    produce(kafka, source, 0, 300)
    spec = spec_for(kafka, source, target)
    engine.start(spec)
    running(engine, spec.deployment_id)
    out = reader(target)
    out.until(300, timeout=30)
    assert engine.stop(spec.deployment_id, timeout=30)
    out.to_end()
    expect_keys(out.keys(), 0, 300)
    offsets = committed_offsets(kafka, spec.group_id, source)
    assert len(offsets) == 2
    assert all(o > 0 for o in offsets.values())
    assert sum(offsets.values()) == 300


def test_records_the_output_topic_refuses_fail_the_stream_with_the_broker_reason_and_commit_nothing(
        kafka: KafkaInfo, kafka_topic: Callable[..., str], reader: Callable[..., Reader]) -> None:
    # Delivery reports come back for failures only (delivery.report.only.error): the failure must still be
    # seen, named, and leave the input where it was.
    source, target = kafka_topic("in"), kafka_topic("out", config={"max.message.bytes": "200"})
    produce(kafka, source, 0, 20)
    engine = Engine(registry=CollectorRegistry(), options=StreamOptions(unreachable_timeout=10.0))
    try:
        spec = spec_for(kafka, source, target)
        engine.start(spec)
        state = engine.wait_for(spec.deployment_id, [FAILED], timeout=60)
    finally:
        engine.shutdown(timeout=30)
    assert state is not None
    assert state.status == FAILED, state
    (code, message), = state.errors
    assert code == KAFKA_TRANSACTION_FAILED
    assert "aborted" in message, message
    assert "too large" in message.lower(), message
    assert reader(target).to_end() == []
    assert committed_offsets(kafka, spec.group_id, source) == {0: 0}  # only the start, committed at connect
    assert end_offsets(kafka, source) == {0: 20}


def test_a_zombie_producer_is_fenced_and_its_transaction_aborted(
        kafka: KafkaInfo, kafka_topic: Callable[..., str], engine: Engine, reader: Callable[..., Reader]) -> None:
    """What a process killed mid-transaction leaves behind, made on purpose: records and offsets in an open
    transaction under the deployment's transactional id. The next runner must abort it, not build on it."""
    source, target = kafka_topic("in"), kafka_topic("out")
    produce(kafka, source, 0, 50)
    spec = spec_for(kafka, source, target)
    zombie = Producer(config(kafka, {"transactional.id": spec.transactional_id}, user="wml"))
    zombie.init_transactions(30)
    zombie.begin_transaction()
    for _ in range(10):
        zombie.produce(target, b'{"zombie": true}', key=b"zombie")
    group = Consumer(config(kafka, {"group.id": spec.group_id, "enable.auto.commit": False,
                                                   "logger": _Quiet()}, user="wml"))
    group.assign([TopicPartition(source, 0, OFFSET_BEGINNING)])
    assert len(group.consume(50, 10)) == 50
    zombie.send_offsets_to_transaction(group.position(group.assignment()), group.consumer_group_metadata(), 30)
    assert zombie.flush(30) == 0
    group.close()
    assert end_offsets(kafka, target, committed=True)[0] < end_offsets(kafka, target, committed=False)[0]

    engine.start(spec)
    running(engine, spec.deployment_id)
    out = reader(target)
    out.until(50, timeout=30)
    assert engine.stop(spec.deployment_id, timeout=30)
    out.to_end()
    expect_keys(out.keys(), 0, 50)  # no zombie record, and the 50 its offsets claimed were scored
    with pytest.raises(KafkaException) as raised:
        zombie.commit_transaction(10)
    assert raised.value.args[0].fatal(), raised.value.args[0]
    everything = reader(target, "read_uncommitted")
    everything.until(60, timeout=30)
    assert everything.keys()[b"zombie"] == 10  # written, then aborted: invisible to read_committed readers


def test_wrong_password_fails_without_showing_it(kafka: KafkaInfo, kafka_topic: Callable[..., str], engine: Engine,
                                                 changes: list[Change]) -> None:
    source, target = kafka_topic("in"), kafka_topic("out")
    secret = f"not-the-password-{uuid.uuid4().hex[:6]}"
    spec = spec_for(kafka, source, target, connection=endpoint(kafka, password=secret))
    engine.start(spec)
    state = engine.wait_for(spec.deployment_id, [FAILED, RUNNING], timeout=30)
    assert state is not None
    assert state.status == FAILED, state
    (code, message), = state.errors
    assert code == "kafka_authentication_failed"
    assert secret not in message
    assert secret not in repr(spec)
    assert kafka.bootstrap in message
    assert [c[1] for c in changes] == ["INITIALIZING", "FAILED"]
    assert secret not in repr(changes)


def test_an_api_key_is_split_the_message_hub_way(kafka: KafkaInfo, kafka_topic: Callable[..., str],
                                                 engine: Engine) -> None:
    """An api_key is 16 characters of user then the password; a wrong one fails without showing either half."""
    source, target = kafka_topic("in"), kafka_topic("out")
    api_key = "wml".ljust(16, "x") + uuid.uuid4().hex
    connection = KafkaEndpoint(brokers=[kafka.bootstrap], api_key=api_key, security_protocol="SASL_PLAINTEXT")
    spec = spec_for(kafka, source, target, connection=connection)
    engine.start(spec)
    state = engine.wait_for(spec.deployment_id, [FAILED, RUNNING], timeout=30)
    assert state is not None
    assert state.status == FAILED
    assert state.errors[0][0] == "kafka_authentication_failed"
    assert api_key[:16] not in state.errors[0][1]
    assert api_key[16:] not in state.errors[0][1]


@pytest.mark.parametrize("missing", ["input", "output"])
def test_unknown_topic_fails_naming_it(kafka: KafkaInfo, kafka_topic: Callable[..., str], engine: Engine,
                                       missing: str) -> None:
    absent = f"absent-{uuid.uuid4().hex[:8]}"
    existing = kafka_topic("t")
    source, target = (absent, existing) if missing == "input" else (existing, absent)
    spec = spec_for(kafka, source, target)
    engine.start(spec)
    state = engine.wait_for(spec.deployment_id, [FAILED, RUNNING], timeout=30)
    assert state is not None
    assert state.status == FAILED, state
    (code, message), = state.errors
    assert code == "kafka_unknown_topic"
    assert absent in message
    assert missing in message


def test_unreachable_brokers_fail_after_the_timeout_and_stop_is_prompt(kafka_topic: Callable[..., str]) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = KafkaEndpoint(brokers=[f"127.0.0.1:{port}"], user="wml", password="secret-pw-123",
                         security_protocol="SASL_PLAINTEXT")
    eng = Engine(registry=CollectorRegistry(), options=StreamOptions(unreachable_timeout=2.0))
    try:
        failing = StreamSpec(str(uuid.uuid4()), MODEL, KafkaTopic("a", conn), KafkaTopic("b", conn))
        started = time.monotonic()
        eng.start(failing)
        state = eng.wait_for(failing.deployment_id, [FAILED], timeout=15)
        assert state is not None
        assert state.status == FAILED, state
        assert time.monotonic() - started < 10
        (code, message), = state.errors
        assert code == "kafka_unreachable"
        assert f"127.0.0.1:{port}" in message
        assert "secret-pw-123" not in message

        stopping = StreamSpec(str(uuid.uuid4()), MODEL, KafkaTopic("a", conn), KafkaTopic("b", conn))
        eng.start(stopping)
        time.sleep(0.3)
        started = time.monotonic()
        assert eng.stop(stopping.deployment_id, timeout=10)
        assert time.monotonic() - started < 3
        assert eng.status(stopping.deployment_id) == eng.status(stopping.deployment_id)
        state = eng.status(stopping.deployment_id)
        assert state is not None
        assert state.status == STOPPED
    finally:
        eng.shutdown(timeout=10)


class _Feeder:
    """Produces keyed tweets k0, k1, ... at a steady rate in a thread, until stopped."""

    def __init__(self, kafka: KafkaInfo, topic: str, per_second: int = 1000, backlog: int = 0) -> None:
        """`backlog`: records written at once first, so that a stream starting on them has full batches."""
        import threading

        self.count = 0
        self._stop = threading.Event()
        self._producer = Producer(config(kafka, {"linger.ms": 5}))
        self._topic, self._per_tick = topic, max(1, per_second // 50)
        self._send(backlog)
        assert self._producer.flush(30) == 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _send(self, n: int) -> None:
        for _ in range(n):
            i = self.count
            self._producer.produce(self._topic, json.dumps({"tweet": TWEETS[i % len(TWEETS)], "n": i}).encode(),
                                   key=f"k{i}".encode())
            self.count += 1
            if i % 1000 == 999:
                self._producer.poll(0)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._send(self._per_tick)
            self._producer.poll(0)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        assert self._producer.flush(30) == 0
        return self.count


class _Child:
    """`python -m wml_server.engine` in a process of its own, so that it can be SIGKILLed."""

    def __init__(self, kafka: KafkaInfo, spec: StreamSpec, log_dir: Path, batch_size: int = 100,
                 workers: int = 0) -> None:
        env = {**os.environ, "WML_ENGINE_KAFKA_PASSWORD": kafka.user("wml").password,
               "PYTHONPATH": os.pathsep.join([str(ROOT / "server"), os.environ.get("PYTHONPATH", "")])}
        self.out = log_dir / f"child-{uuid.uuid4().hex[:6]}.out"
        with self.out.open("w") as stdout, (log_dir / "child.err").open("a") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wml_server.engine", "--deployment-id", spec.deployment_id,
                 "--brokers", kafka.bootstrap, "--input-topic", spec.input.topic,
                 "--output-topic", spec.output.topic, "--user", "wml", "--security-protocol", "SASL_PLAINTEXT",
                 "--batch-size", str(batch_size), "--scoring-workers", str(workers)],
                stdout=stdout, stderr=stderr, env=env, cwd=ROOT)

    def statuses(self) -> list[str]:
        return [json.loads(line)["status"] for line in self.out.read_text().splitlines() if '"status"' in line]

    def wait_running(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while RUNNING not in self.statuses():
            assert self.process.poll() is None, f"the child exited: {self.out.read_text()}"
            assert time.monotonic() < deadline, f"the child was not RUNNING within {timeout} s: {self.statuses()}"
            time.sleep(0.05)

    def workers(self) -> list[int]:
        return children_running(self.process.pid, b"score_worker")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_mid_transaction_then_restart_is_exactly_once(
        workers: int, kafka: KafkaInfo, kafka_topic: Callable[..., str], reader: Callable[..., Reader],
        tmp_path: Path) -> None:
    """workers: the stream's scoring workers, which must die with the process (PR_SET_PDEATHSIG)."""
    source, target = kafka_topic("in"), kafka_topic("out")
    spec = spec_for(kafka, source, target)
    # A backlog: the stream runs full batches, each transaction open while the next batch scores. Caught up, a
    # transaction of a few records is open for a few milliseconds, shorter than seeing it open and killing.
    feeder = _Feeder(kafka, source, backlog=60_000 if workers else 20_000)  # workers drain it 2-3x faster
    children: list[_Child] = []
    try:
        # Kill while a transaction is open (the output's last stable offset is behind its end), and check it
        # stayed open once the process was gone: only then is the restart really tested. Usually one try.
        left_open = False
        # With scoring workers a transaction is open for a shorter part of the time (the records are scored
        # before it begins, outside this process), so more kills may land between two of them.
        attempts = 20
        for _attempt in range(attempts):
            child = _Child(kafka, spec, tmp_path, batch_size=2000 if workers else 500, workers=workers)
            children.append(child)
            child.wait_running()
            scoring = child.workers()
            assert len(scoring) == workers
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                stable, end = end_offsets(kafka, target)[0], end_offsets(kafka, target, committed=False)[0]
                if 0 < stable < end:
                    child.kill()
                    break
            else:
                raise AssertionError("no open transaction seen within 20 s")
            gone = time.monotonic() + 10
            while [p for p in scoring if alive(p)] and time.monotonic() < gone:
                time.sleep(0.05)
            assert not [p for p in scoring if alive(p)], "scoring workers outlived the stream"
            time.sleep(0.5)  # a commit already on its way to the coordinator would complete by now
            if end_offsets(kafka, target)[0] < end_offsets(kafka, target, committed=False)[0]:
                left_open = True
                break
        assert left_open, f"{attempts} kills in a row landed between transactions"

        survivor = _Child(kafka, spec, tmp_path, workers=workers)
        children.append(survivor)
        survivor.wait_running()
        time.sleep(0.5)  # records keep flowing into the restarted stream
        produced = feeder.stop()
        out = reader(target)
        out.until(produced, timeout=60)
        assert survivor.terminate() == 0
        out.to_end()
        expect_keys(out.keys(), 0, produced)
        assert committed_offsets(kafka, spec.group_id, source) == {0: produced}
        everything = reader(target, "read_uncommitted")
        everything.until(produced + 1, timeout=10)
        assert len(everything.records) > produced, "the killed transaction's records should be there, aborted"
    finally:
        feeder.stop()
        for child in children:
            if child.process.poll() is None:
                child.kill()
