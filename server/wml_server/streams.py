"""Between the API's stored deployments and the stream engine: build specs, persist status changes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from wml_server.db import CleanupRecord, Database, DeploymentRecord
from wml_server.engine.cleanup import delete_group, remove_leftovers
from wml_server.engine.engine import Engine
from wml_server.engine.failures import StreamFailure
from wml_server.engine.position import committed_position
from wml_server.engine.probe import check_stream
from wml_server.engine.session import StreamOptions
from wml_server.engine.spec import KafkaEndpoint, KafkaTopic, StartOptions, StreamSpec
from wml_server.engine.state import FAILED, KAFKA_UNREACHABLE, STOPPED, StreamState
from wml_server.errors import APIError
from wml_server.models.base import Model
from wml_server.models.catalog import ModelCatalog
from wml_server.models.published import PublishedUserModel
from wml_server.repository.frameworks import MLLIB_TAR, SKOPS
from wml_server.spark.placement import reachable, spark_master
from wml_server.spark.supervisor import SparkEngine, SparkOptions

log = logging.getLogger(__name__)

DRY_RUN_KAFKA_TIMEOUT = 5.0  # per connection: a dry run answers within ~10 s
RETIRED_RUNNER_WAIT = 300.0  # a deleted deployment's runner still committing its last batch
# A cleanup not done by then is given up: the broker has dropped the offsets of the empty group by itself
# (offsets.retention.minutes) and forgotten the transactional id (transactional.id.expiration.ms), 7 days each
# by default.
CLEANUP_GIVE_UP = timedelta(days=7)


def endpoint(connection: dict[str, Any]) -> KafkaEndpoint:
    brokers = connection.get("kafka_brokers_sasl") or []
    return KafkaEndpoint(brokers=list(brokers), user=connection.get("user"), password=connection.get("password"),
                         api_key=connection.get("api_key"),
                         security_protocol=connection.get("security_protocol", "SASL_SSL"))


def spec_of(record: DeploymentRecord, models: ModelCatalog, model: Model | PublishedUserModel | None = None
            ) -> StreamSpec:
    """`model`: instead of the record's own (a deleted deployment's cleanup, whose model may be gone)."""
    model = model or models.get(record.instance_id, record.model_id, record.model_version)
    if model is None:  # a model with deployments cannot be deleted; a built-in one only vanishes with the code
        raise LookupError(f"model {record.model_id} of deployment {record.id} is not available")
    body = record.body
    source, target = body["input"]["source"], body["output"]["target"]
    return StreamSpec(
        deployment_id=record.id, model=model,
        input=KafkaTopic(source["topic"], endpoint(body["input"]["connection"])),
        output=KafkaTopic(target["topic"], endpoint(body["output"]["connection"])),
        start=start_options(source), dead_letter_topic=target.get("dead_letter_topic") or None)


class _GoneModel:
    """The model of a deleted deployment whose model was deleted after it: its cleanup never scores."""

    def __init__(self, model_id: str) -> None:
        self.id = self.name = model_id
        self.description = "deleted"
        self.model_type = self.runtime_environment = "none"

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        raise RuntimeError(f"model {self.id} is deleted")


def cleanup_spec(cleanup: CleanupRecord, models: ModelCatalog) -> StreamSpec:
    record = DeploymentRecord(id=cleanup.id, instance_id=cleanup.instance_id, model_id=cleanup.model_id,
                              body=cleanup.body, spark=None, status=STOPPED, status_details=None, desired=STOPPED,
                              created_at=cleanup.created_at, modified_at=cleanup.created_at,
                              model_version=cleanup.model_version)
    model = models.get(cleanup.instance_id, cleanup.model_id, cleanup.model_version) or _GoneModel(cleanup.model_id)
    return spec_of(record, models, model)


def start_options(source: dict[str, Any]) -> StartOptions:
    """The extension EXT_STARTING_OFFSETS of a stored `input.source` (absent: the original's earliest)."""
    handed = source.get("start_position")
    return StartOptions(starting_offsets=source.get("starting_offsets") or "earliest",
                        start_position={str(p): int(o) for p, o in handed.items()} if handed else None)


class StreamController:
    def __init__(self, db: Database, models: ModelCatalog, metrics: CollectorRegistry, *, run_streams: bool,
                 unreachable_timeout: float, scoring_workers: int = 0, spark_masters: tuple[str, ...] = (),
                 spark_dir: Path | None = None, spark_options: SparkOptions | None = None) -> None:
        self._db = db
        self._models = models
        self.engine = Engine(on_status_change=self._persist, registry=metrics, run_streams=run_streams,
                             options=StreamOptions(unreachable_timeout=unreachable_timeout,
                                                   scoring_workers=scoring_workers))
        self.spark_masters = spark_masters
        self.spark = SparkEngine(spark_dir or Path("wml-data") / "spark", self._persist,
                                 spark_options or SparkOptions())
        self._lock = threading.Lock()
        self._cleanups: list[threading.Thread] = []

    def _persist(self, deployment_id: str, status: str, errors: list[tuple[str, str]]) -> None:
        details = {"failure": {"errors": [{"code": c, "message": m} for c, m in errors]}} if errors else None
        position = None
        if status == STOPPED:
            # Final once STOPPED (every transaction of the run has committed), and stored in the same update as
            # the status: a client that sees STOPPED hands this position over to a deployment replacing it.
            # A Spark driver knows only the partitions its own run wrote: the group's offsets are its position.
            state = None if self.spark.runs(deployment_id) else self.engine.status(deployment_id)
            if state is not None and state.position is not None:
                topic, offsets = state.position
                position = {"topic": topic, "offsets": offsets}
            else:
                position = self.committed(deployment_id)
        self._db.set_status(deployment_id, status, details, position)

    def committed(self, deployment_id: str) -> dict[str, Any] | None:
        """The position of a deployment this process has not run (from the broker): a stored one may be older
        than the last transaction of a run that a restart or a failure cut short."""
        record = self._db.deployment_by_id(deployment_id)
        if record is None or not self.engine.run_streams:
            return None
        spec = spec_of(record, self._models)
        offsets = committed_position(spec)
        return {"topic": spec.input.topic, "offsets": offsets} if offsets is not None else None

    def live(self, deployment_id: str) -> StreamState | None:
        """What the engine knows of a running deployment now (status, position, lag): no Kafka call."""
        if self.spark.runs(deployment_id):
            return self.spark.status(deployment_id)
        return self.engine.status(deployment_id)

    def master(self, record: DeploymentRecord) -> str | None:
        """The Spark master the deployment runs on (None: the built-in engine). Raises APIError when its master
        is not (or no longer) allowed."""
        return spark_master(record.spark, self.spark_masters)

    def start(self, record: DeploymentRecord) -> None:
        spec = spec_of(record, self._models)
        try:
            master = self.master(record) if self.engine.run_streams else None
        except APIError as refused:  # allowed at create, no longer: the administrator changed the list
            self._persist(record.id, FAILED, [(refused.code, refused.message)])
            return
        if master is None:
            self.engine.start(spec)
            return
        self.spark.start(spec, master, self._spark_model(spec))

    def _spark_model(self, spec: StreamSpec) -> dict[str, Any]:
        """What the driver needs of the model; a user's model's content goes to the deployment's folder, where
        the driver (MLlib) or the executors' model workers (scikit-learn) read it."""
        model = spec.model
        if not isinstance(model, PublishedUserModel):
            return {"kind": "builtin", "id": model.id}
        assert model.schema is not None  # checked at create
        mllib = model.content_format == MLLIB_TAR
        content = self.spark.state_root / spec.deployment_id / ("model.tar.gz" if mllib else "model.bin")
        content.parent.mkdir(parents=True, exist_ok=True)
        content.write_bytes(model.read_content())
        content.chmod(0o600)
        # `version`: the deployment's pinned version, whose content was just written; its records name it.
        if mllib:
            return {"kind": "mllib", "archive": str(content), "version": model.version_id,
                    "fields": [{"name": f.name, "type": f.type} for f in model.schema.fields]}
        options = model.options
        return {"kind": "user", "framework": "skops" if model.content_format == SKOPS else "scikit-learn",
                "path": str(content), "schema": model.schema.to_json(), "version": model.version_id,
                "name": f"{model.name[:60]} for deployment {spec.deployment_id}",
                "options": {"memory_limit_bytes": options.memory_limit_bytes, "load_timeout": options.load_timeout,
                            "predict_timeout": options.predict_timeout, "require_sandbox": options.require_sandbox}}

    def stop(self, deployment_id: str) -> None:
        if self.spark.runs(deployment_id) or (self.spark.state_root / deployment_id).is_dir():
            self.spark.stop(deployment_id)  # also a driver the last service left running
            return
        self.engine.stop(deployment_id)

    def check(self, record: DeploymentRecord) -> list[str]:
        """The Kafka part of a dry run: both connections work and every topic exists (accept-only: nothing)."""
        if not self.engine.run_streams:
            return []
        master = self.master(record)
        checked = [f"Spark master {master} (reachable)"] if master and reachable(master) else []
        try:
            return checked + check_stream(spec_of(record, self._models), timeout=DRY_RUN_KAFKA_TIMEOUT)
        except StreamFailure as failure:
            if failure.code == KAFKA_UNREACHABLE:  # transient: the same request may pass in a moment
                raise APIError(503, failure.code, failure.message, {"Retry-After": "10"}) from None
            raise APIError(400, failure.code, failure.message) from None

    def remove(self, record: DeploymentRecord) -> None:
        """Deletes the deployment's row and stops its stream, then (in the background, once its runner has
        finished) aborts what its producer left open and deletes its consumer group: nothing of it stays on the
        brokers. Until that is done a cleanup row stands in for the deployment (written in the deleting
        transaction), so a service killed in between finishes it after its restart."""
        # Created STOPPED and never started: it has no group, and fencing would only create a transactional id.
        ran = self.live(record.id) is not None or record.position is not None or record.status != STOPPED
        on_spark = self.spark.runs(record.id) or (self.spark.state_root / record.id).exists()
        leaves_traces = self.engine.run_streams and ran  # accept-only: it never had a Kafka client
        self._db.delete_deployment(record.instance_id, record.id,
                                   cleanup_on_spark=on_spark if leaves_traces else None)
        self.engine.remove(record.id)
        if leaves_traces:
            self._clean_up_later(spec_of(record, self._models), on_spark=on_spark, after_runner=True)

    def finish_cleanups(self) -> int:
        """After a restart: the cleanups that deletions left unfinished (the last process stopped or was killed
        before their groups were deleted). Returns how many were started."""
        started = 0
        for cleanup in self._db.cleanups():
            if datetime.now(UTC) - datetime.fromisoformat(cleanup.created_at) > CLEANUP_GIVE_UP:
                log.warning("deployment %s: its cleanup was not done within %s of its deletion; given up (the "
                            "brokers expire what it left)", cleanup.id, CLEANUP_GIVE_UP)
                self._db.cleanup_done(cleanup.id)
                continue
            log.info("deployment %s: finishing the cleanup its deletion left unfinished", cleanup.id)
            self._clean_up_later(cleanup_spec(cleanup, self._models), on_spark=cleanup.on_spark, after_runner=False)
            started += 1
        return started

    def _clean_up_later(self, spec: StreamSpec, *, on_spark: bool, after_runner: bool) -> None:
        target = self._clean_up_spark if on_spark else self._clean_up
        thread = threading.Thread(target=target, args=(spec, after_runner), daemon=True,
                                  name=f"wml-cleanup-{spec.deployment_id[:8]}")
        with self._lock:
            self._cleanups = [t for t in self._cleanups if t.is_alive()] + [thread]
        thread.start()

    def _clean_up(self, spec: StreamSpec, after_runner: bool) -> None:
        try:
            if after_runner and not self.engine.join_retired(spec.deployment_id, timeout=RETIRED_RUNNER_WAIT):
                log.warning("deployment %s: its stream did not finish within %g s after the delete; its consumer "
                            "group %s is deleted after the service's next start", spec.deployment_id,
                            RETIRED_RUNNER_WAIT, spec.group_id)
                return
            if remove_leftovers(spec):
                self._db.cleanup_done(spec.deployment_id)
        except Exception as exc:  # a cleanup thread must never take anything else down
            log.warning("deployment %s: cleaning up after the delete failed: %s", spec.deployment_id,
                        type(exc).__name__)

    def _clean_up_spark(self, spec: StreamSpec, _after_runner: bool) -> None:
        try:
            self.spark.remove(spec)  # after a restart: stops the driver the last process left running
            if delete_group(spec):
                self._db.cleanup_done(spec.deployment_id)
        except Exception as exc:  # a cleanup thread must never take anything else down
            log.warning("deployment %s: cleaning up its Spark stream after the delete failed: %s",
                        spec.deployment_id, type(exc).__name__)

    def shutdown(self) -> None:
        self.spark.shutdown()
        self.engine.shutdown()
        with self._lock:
            cleanups = list(self._cleanups)
        deadline = time.monotonic() + 30
        for thread in cleanups:  # deletes answered already: let their cleanup finish
            thread.join(max(0.0, deadline - time.monotonic()))
