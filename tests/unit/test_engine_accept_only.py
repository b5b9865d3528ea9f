"""Engine(run_streams=False): deployments accepted and reported, no Kafka client, no thread."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from wml_server.engine import RUNNING, STOPPED, Engine, KafkaEndpoint, KafkaTopic, StreamSpec
from wml_server.models.sentiment import SentimentModel

MODEL = SentimentModel()
# Nothing listens there: a Kafka client created by mistake would not get far, and the test would notice.
CONN = KafkaEndpoint(["127.0.0.1:1"], user="u", password="p-123456", security_protocol="SASL_PLAINTEXT")


def spec(deployment_id: str | None = None) -> StreamSpec:
    return StreamSpec(deployment_id or str(uuid.uuid4()), MODEL, KafkaTopic("in", CONN), KafkaTopic("out", CONN))


class NoClients:
    """Kafka clients that must never be asked for: each request is recorded and refused."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def consumer(self, config: dict[str, Any]) -> Any:
        self.asked.append("consumer")
        raise AssertionError("accept-only engine asked for a Kafka consumer")

    def producer(self, config: dict[str, Any]) -> Any:
        self.asked.append("producer")
        raise AssertionError("accept-only engine asked for a Kafka producer")


def test_a_thousand_deployments_without_a_thread_or_a_kafka_client() -> None:
    changes: list[tuple[str, str]] = []
    clients = NoClients()
    engine = Engine(run_streams=False, on_status_change=lambda d, s, e: changes.append((d, s)), clients=clients)
    threads = threading.active_count()
    specs = [spec() for _ in range(1000)]
    for s in specs:
        engine.start(s)
    assert threading.active_count() == threads
    assert clients.asked == []
    # Each start reported RUNNING exactly once, in the order they were started.
    assert changes == [(s.deployment_id, RUNNING) for s in specs]
    assert all((st := engine.status(s.deployment_id)) is not None and st.status == RUNNING for s in specs)
    assert len(engine.deployments()) == 1000

    first = specs[0].deployment_id
    assert engine.stop(first)
    state = engine.status(first)
    assert state is not None
    assert state.status == STOPPED
    assert state.errors == []
    assert state.records_in == 0
    engine.start(specs[0])
    assert engine.remove(first)
    assert engine.status(first) is None
    assert [c for c in changes if c[0] == first] == [(first, RUNNING), (first, STOPPED), (first, RUNNING)]
    assert clients.asked == []
    engine.shutdown()
    with pytest.raises(RuntimeError):
        engine.start(spec())


def test_stop_of_an_unknown_deployment_is_a_no_op() -> None:
    engine = Engine(run_streams=False)
    assert engine.stop(str(uuid.uuid4()))
    assert engine.remove(str(uuid.uuid4()))


def test_a_failing_callback_does_not_break_the_engine() -> None:
    def boom(deployment_id: str, status: str, errors: list[tuple[str, str]]) -> None:
        raise RuntimeError("database closed")

    engine = Engine(run_streams=False, on_status_change=boom)
    s = spec()
    engine.start(s)
    state = engine.status(s.deployment_id)
    assert state is not None
    assert state.status == RUNNING


def test_engines_have_metrics_registries_of_their_own() -> None:
    shared = CollectorRegistry()
    first, second = Engine(run_streams=False, registry=shared), Engine(run_streams=False)
    assert first.registry is shared
    assert second.registry is not shared
    assert shared.get_sample_value("wml_stream_scoring_seconds_count") == 0
