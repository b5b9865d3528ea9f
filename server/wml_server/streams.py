"""Between the API's stored deployments and the stream engine: build specs, persist status changes."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry

from wml_server.db import Database, DeploymentRecord
from wml_server.engine.engine import Engine
from wml_server.engine.session import StreamOptions
from wml_server.engine.spec import KafkaEndpoint, KafkaTopic, StartOptions, StreamSpec
from wml_server.models.registry import ModelRegistry

log = logging.getLogger(__name__)


def endpoint(connection: dict[str, Any]) -> KafkaEndpoint:
    brokers = connection.get("kafka_brokers_sasl") or []
    return KafkaEndpoint(brokers=list(brokers), user=connection.get("user"), password=connection.get("password"),
                         api_key=connection.get("api_key"),
                         security_protocol=connection.get("security_protocol", "SASL_SSL"))


def spec_of(record: DeploymentRecord, models: ModelRegistry) -> StreamSpec:
    model = models.get(record.model_id)
    if model is None:  # models are built in; one can only vanish with a code change
        raise LookupError(f"model {record.model_id} of deployment {record.id} is not available")
    body = record.body
    source = body["input"]["source"]
    return StreamSpec(
        deployment_id=record.id, model=model,
        input=KafkaTopic(source["topic"], endpoint(body["input"]["connection"])),
        output=KafkaTopic(body["output"]["target"]["topic"], endpoint(body["output"]["connection"])),
        start=start_options(source))


def start_options(source: dict[str, Any]) -> StartOptions:
    """The extension EXT_STARTING_OFFSETS of a stored `input.source` (absent: the original's earliest)."""
    handed = source.get("start_position")
    return StartOptions(starting_offsets=source.get("starting_offsets") or "earliest",
                        start_position={str(p): int(o) for p, o in handed.items()} if handed else None)


class StreamController:
    def __init__(self, db: Database, models: ModelRegistry, metrics: CollectorRegistry, *, run_streams: bool,
                 unreachable_timeout: float) -> None:
        self._db = db
        self._models = models
        self.engine = Engine(on_status_change=self._persist, registry=metrics, run_streams=run_streams,
                             options=StreamOptions(unreachable_timeout=unreachable_timeout))

    def _persist(self, deployment_id: str, status: str, errors: list[tuple[str, str]]) -> None:
        details = {"failure": {"errors": [{"code": c, "message": m} for c, m in errors]}} if errors else None
        self._db.set_status(deployment_id, status, details)

    def start(self, record: DeploymentRecord) -> None:
        self.engine.start(spec_of(record, self._models))

    def stop(self, deployment_id: str) -> None:
        self.engine.stop(deployment_id)

    def remove(self, deployment_id: str) -> None:
        self.engine.remove(deployment_id)

    def shutdown(self) -> None:
        self.engine.shutdown()
