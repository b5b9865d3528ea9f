"""Where a stream starts (engine/position.py): the pure resolution, and the progress the API renders."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry

from tests.unit.test_engine_runner import FakeClients, FakeCluster, spec, tweets, wait_until
from wml_server.engine import Engine, StreamOptions, StreamState
from wml_server.engine.position import StreamProgress, resolve_start
from wml_server.engine.spec import StartOptions


def test_the_groups_committed_offset_wins() -> None:
    options = StartOptions(starting_offsets="latest", start_position={"0": 7})
    assert resolve_start(0, 3, (0, 10), options) == 3
    assert resolve_start(0, 0, (0, 10), options) == 0  # 0 is an offset, not "none"


def test_a_handed_over_position_comes_next() -> None:
    options = StartOptions(starting_offsets="latest", start_position={"0": 7})
    assert resolve_start(0, None, (0, 10), options) == 7
    assert resolve_start(1, None, (2, 10), options) == 10  # not handed over: latest


def test_starting_offsets_default_to_earliest() -> None:
    assert resolve_start(0, None, (4, 10), StartOptions()) == 4
    assert resolve_start(0, None, (4, 10), StartOptions(starting_offsets="latest")) == 10
    assert resolve_start(0, -1001, (4, 10), StartOptions()) == 4  # OFFSET_INVALID: nothing committed


def test_progress_starts_advances_and_measures() -> None:
    progress = StreamProgress()
    assert progress.position() is None
    assert progress.lag is None
    progress.begin("tweets", {0: 5, 1: 0}, 12)
    progress.advance({1: 3})
    progress.set_lag(0)
    assert progress.position() == ("tweets", {"0": 5, "1": 3})
    assert progress.lag == 0


# Through the engine, on the fake cluster of the runner's tests.

def _engine(cluster: FakeCluster) -> Engine:
    return Engine(registry=CollectorRegistry(), clients=FakeClients(cluster),
                  options=StreamOptions(batch_size=10, batch_timeout=0.01, unreachable_timeout=2.0,
                                        lag_interval=0.05))


def test_latest_skips_what_was_there_and_the_start_is_committed_at_once() -> None:
    cluster = FakeCluster(topics={"in": 1, "out": 1})
    cluster.add(0, *tweets(4))
    engine = _engine(cluster)
    try:
        s = replace(spec(), start=StartOptions(starting_offsets="latest"))
        engine.start(s)
        wait_until(lambda: cluster.committed == {0: 4})  # committed before any transaction
        cluster.add(0, *tweets(3))
        wait_until(lambda: len(cluster.output) == 3)
        wait_until(lambda: (engine.status(s.deployment_id) or StreamState("")).lag == 0)
        assert engine.stop(s.deployment_id)
        state = engine.status(s.deployment_id)
        assert state is not None
        assert state.position == ("in", {"0": 7})
        assert state.lag == 0
    finally:
        engine.shutdown(timeout=10)


def test_a_handed_over_position_is_where_a_new_group_starts() -> None:
    cluster = FakeCluster(topics={"in": 1, "out": 1})
    cluster.add(0, *tweets(6))
    engine = _engine(cluster)
    try:
        s = replace(spec(), start=StartOptions(start_position={"0": 2}))
        engine.start(s)
        wait_until(lambda: len(cluster.output) == 4)
        assert next(k for k, _ in cluster.output) == b"k0-2"
    finally:
        engine.shutdown(timeout=10)
