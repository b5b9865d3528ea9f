"""Streams of a built-in model scored in worker processes (issue 17), on the real broker: each worker scores a
part of every batch, whatever its partitions; the output is the same as scoring in the service's process, in
each partition's order, exactly once across stop, start and a kill -9 of a worker."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry

from tests.integration.test_engine_streams import (
    Reader,
    committed_offsets,
    expect_keys,
    produce,
    reader,
    running,
    spec_for,
)
from tests.support import alive
from wml_localplatform.kafka import KafkaInfo
from wml_server.engine import FAILED, RUNNING, Engine, StreamOptions

__all__ = ["reader"]


def make_engine(workers: int) -> Engine:
    return Engine(registry=CollectorRegistry(),
                  options=StreamOptions(unreachable_timeout=5.0, lag_interval=0.2, scoring_workers=workers,
                                        batch_size=500))


@pytest.fixture
def engines() -> Iterator[Callable[[int], Engine]]:
    made: list[Engine] = []

    def make(workers: int) -> Engine:
        made.append(make_engine(workers))
        return made[-1]

    yield make
    for engine in made:
        engine.shutdown(timeout=30)


def test_partitions_are_spread_over_workers_with_the_same_output(
        kafka: KafkaInfo, kafka_topic: Callable[..., str], engines: Callable[[int], Engine],
        reader: Callable[..., Reader]) -> None:
    source, target, alone = kafka_topic("in", partitions=4), kafka_topic("out", partitions=4), kafka_topic("ref")
    produce(kafka, source, 0, 2_000)
    engine = engines(2)
    spec = spec_for(kafka, source, target)
    engine.start(spec)
    running(engine, spec.deployment_id)
    pids = engine.scoring_pids(spec.deployment_id)
    assert len(pids) == 2
    assert os.getpid() not in pids
    assert all(alive(p) for p in pids)
    out = reader(target)
    out.until(2_000, timeout=60)
    assert engine.stop(spec.deployment_id, timeout=30)
    assert not [p for p in pids if alive(p)], "the workers end with their stream"
    out.to_end()
    expect_keys(out.keys(), 0, 2_000)
    assert sum(committed_offsets(kafka, spec.group_id, source).values()) == 2_000

    # The same records scored in the service's own process come out the same, field for field.
    in_process = engines(0)
    ref = spec_for(kafka, source, alone)
    in_process.start(ref)
    running(in_process, ref.deployment_id)
    assert in_process.scoring_pids(ref.deployment_id) == []
    expected = reader(alone)
    expected.until(2_000, timeout=60)
    assert dict(out.records) == dict(expected.records)


def test_one_partition_uses_every_worker_keeps_its_order_and_stop_start_is_exactly_once(
        kafka: KafkaInfo, kafka_topic: Callable[..., str], engines: Callable[[int], Engine],
        reader: Callable[..., Reader]) -> None:
    source, target = kafka_topic("in"), kafka_topic("out")
    produce(kafka, source, 0, 10_000)
    engine = engines(4)
    spec = spec_for(kafka, source, target)
    engine.start(spec)
    running(engine, spec.deployment_id)
    assert len(engine.scoring_pids(spec.deployment_id)) == 4  # each takes a part of every batch
    out = reader(target)
    out.until(500, timeout=30)
    assert engine.stop(spec.deployment_id, timeout=30)
    scored = len(out.to_end())
    assert committed_offsets(kafka, spec.group_id, source) == {0: scored}
    engine.start(spec)
    running(engine, spec.deployment_id)
    out.until(10_000, timeout=60)
    assert engine.stop(spec.deployment_id, timeout=30)
    out.to_end()
    expect_keys(out.keys(), 0, 10_000)
    numbers = [int(key[1:]) for key, _ in out.records]
    assert numbers == sorted(numbers), "one partition: the output keeps the input's order"


@pytest.mark.parametrize("kills", [1, 3])
def test_a_worker_killed_mid_stream_loses_and_repeats_nothing(
        kills: int, kafka: KafkaInfo, kafka_topic: Callable[..., str], engines: Callable[[int], Engine],
        reader: Callable[..., Reader]) -> None:
    """kill -9 of a scoring worker: the batch it held is not produced, the open transaction is aborted by the
    new clients' fencing, new workers take over from the committed offsets. The stream stays RUNNING."""
    total = 30_000
    source, target = kafka_topic("in", partitions=2), kafka_topic("out", partitions=2)
    produce(kafka, source, 0, total)
    engine = engines(2)
    spec = spec_for(kafka, source, target)
    engine.start(spec)
    running(engine, spec.deployment_id)
    out = reader(target)
    killed: list[int] = []
    for k in range(kills):
        out.until(2_000 * (k + 1), timeout=60)
        deadline = time.monotonic() + 30
        while not (pids := [p for p in engine.scoring_pids(spec.deployment_id) if p not in killed]):
            assert time.monotonic() < deadline, "no new workers after a kill"
            time.sleep(0.05)
        before = engine.status(spec.deployment_id)
        assert before is not None
        os.kill(pids[k % len(pids)], signal.SIGKILL)
        killed.append(pids[k % len(pids)])
        # Two batches committed since (the one in flight may have been the old workers'): three lost in a row
        # without a commit between fail the stream.
        deadline = time.monotonic() + 60
        while (now := engine.status(spec.deployment_id)) is not None and now.records_in <= before.records_in + 1000:
            assert time.monotonic() < deadline, f"nothing committed after kill {k + 1}: {now}"
            time.sleep(0.05)
    out.until(total, timeout=120)
    state = engine.status(spec.deployment_id)
    assert state is not None
    assert state.status == RUNNING, state
    assert engine.stop(spec.deployment_id, timeout=30)
    out.to_end()
    keys: Counter[bytes] = out.keys()
    expect_keys(keys, 0, total)
    assert sum(committed_offsets(kafka, spec.group_id, source).values()) == total
    assert not set(killed) & set(engine.scoring_pids(spec.deployment_id))


def test_a_worker_that_cannot_start_fails_the_stream_with_its_reason(
        kafka: KafkaInfo, kafka_topic: Callable[..., str], engines: Callable[[int], Engine],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from wml_server.engine import process_scorer

    monkeypatch.setattr(process_scorer, "WORKER_MODULE", "wml_server.engine.no_such_module")
    source, target = kafka_topic("in"), kafka_topic("out")
    engine = engines(2)
    spec = spec_for(kafka, source, target)
    engine.start(spec)
    state = engine.wait_for(spec.deployment_id, [RUNNING, FAILED], 60)
    assert state is not None
    assert state.status == FAILED
    assert state.errors[0][0] == "scoring_worker_failed", state.errors


def test_an_idle_worker_killed_is_replaced(kafka: KafkaInfo, kafka_topic: Callable[..., str],
                                          engines: Callable[[int], Engine], reader: Callable[..., Reader]) -> None:
    """A caught-up stream's small batches go to its first worker only: the death of another is seen by no batch,
    and is noticed between batches instead."""
    source, target = kafka_topic("in"), kafka_topic("out")
    produce(kafka, source, 0, 50)
    engine = engines(2)
    spec = spec_for(kafka, source, target)
    engine.start(spec)
    running(engine, spec.deployment_id)
    out = reader(target)
    out.until(50, timeout=30)
    idle = engine.scoring_pids(spec.deployment_id)[1]
    os.kill(idle, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(pids := engine.scoring_pids(spec.deployment_id)) != 2 or idle in pids:
        assert time.monotonic() < deadline, f"the killed worker was not replaced: {pids}"
        time.sleep(0.05)
    produce(kafka, source, 50, 50)
    out.until(100, timeout=30)
    state = engine.status(spec.deployment_id)
    assert state is not None
    assert state.status == RUNNING
    assert engine.stop(spec.deployment_id, timeout=30)
    out.to_end()
    expect_keys(out.keys(), 0, 100)
