"""What the API does with deployments: validation, limits, persistence, and the streams behind them."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from wml_api.models import (
    SPARK_HEADER,
    STATUS_PATH,
    DeploymentCreate,
    DeploymentStatus,
    PatchOperation,
    SparkServiceInstance,
)
from wml_server.db import Database, DeploymentRecord, now_iso
from wml_server.engine.state import StreamState
from wml_server.errors import APIError
from wml_server.models.base import Model
from wml_server.models.catalog import ModelCatalog
from wml_server.models.published import PublishedUserModel
from wml_server.repository.frameworks import DEPLOYABLE, PICKLED
from wml_server.spark.placement import spark_master

# The contract names them once; str values, so they compare equal to what any server sends.
RUNNING, STOPPED, INITIALIZING, FAILED = (DeploymentStatus.RUNNING.value, DeploymentStatus.STOPPED.value,
                                          DeploymentStatus.INITIALIZING.value, DeploymentStatus.FAILED.value)


class Streams(Protocol):
    """The engine as the service sees it (wml_server.streams.StreamController)."""

    def start(self, record: DeploymentRecord) -> None: ...
    def stop(self, deployment_id: str) -> None: ...
    def remove(self, record: DeploymentRecord) -> None: ...  # deletes its row too
    def check(self, record: DeploymentRecord) -> list[str]: ...
    def live(self, deployment_id: str) -> StreamState | None: ...
    def committed(self, deployment_id: str) -> dict[str, Any] | None: ...
    @property
    def spark_masters(self) -> tuple[str, ...]: ...


class DeploymentService:
    def __init__(self, db: Database, models: ModelCatalog, streams: Streams, *, limit: int, plan: str,
                 allow_pickled: bool = True) -> None:
        self.db = db
        self.models = models
        self.streams = streams
        self.limit = limit
        self.plan = plan
        self.allow_pickled = allow_pickled

    def model(self, instance_id: str, model_id: str) -> Model | PublishedUserModel:
        model = self.models.get(instance_id, model_id)
        if model is None:
            raise APIError(404, "not_found", f"Published model {model_id} does not exist.")
        return model

    def deployable(self, instance_id: str, model_id: str, on_spark: bool = False) -> Model | PublishedUserModel:
        """The model, if a stream can run it on the engine chosen; else the 400 that says why."""
        model = self.model(instance_id, model_id)
        if isinstance(model, PublishedUserModel):
            # Spark runs every format the repository takes; the built-in engine all but MLlib's.
            if not on_spark and model.content_format not in DEPLOYABLE:
                raise APIError(400, "model_not_deployable",
                               f"Model {model_id} is a {model.model_type} model: the built-in engine runs "
                               "scikit-learn models only. Spark MLlib models run on Spark: name a Spark master "
                               "this service allows in the `X-Spark-Service-Instance` credentials.")
            if model.content_format in PICKLED and not self.allow_pickled:
                raise APIError(400, "pickled_models_disabled",
                               f"Model {model_id} is pickled and this service runs no pickled models "
                               "(WML_SERVER_PICKLED_MODELS=false): publish it in skops's format.")
            if model.schema is None:
                raise APIError(400, "missing_input_schema",
                               f"Model {model_id} declares no input schema, so no record field can be mapped to "
                               "its features: publish it with `input_data_schema`.")
        return model

    def deployment(self, instance_id: str, deployment_id: str) -> DeploymentRecord:
        record = self.db.deployment(instance_id, deployment_id)
        if record is None:
            raise APIError(404, "not_found", f"Deployment {deployment_id} does not exist.")
        return record

    def deployment_of_model(self, instance_id: str, model_id: str, deployment_id: str) -> DeploymentRecord:
        self.model(instance_id, model_id)
        record = self.deployment(instance_id, deployment_id)
        if record.model_id != model_id:
            raise APIError(404, "not_found", f"Deployment {deployment_id} does not exist for model {model_id}.")
        return record

    def create(self, instance_id: str, model_id: str, body: DeploymentCreate,
               spark_header: str | None) -> DeploymentRecord:
        record = self._new(instance_id, model_id, body, spark_header)
        self.db.insert_deployment(record)
        if record.desired == RUNNING:
            self.streams.start(record)
        # initial_status STOPPED (EXT_INITIAL_STATUS): no client is made until a PATCH sets it RUNNING.
        return self.deployment(instance_id, record.id)

    def check(self, instance_id: str, model_id: str, body: DeploymentCreate, spark_header: str | None) -> list[str]:
        """Extension EXT_DRY_RUN: every check a create makes, and (streams on) both Kafka connections; creates
        nothing. Raises the APIError the create would have answered (or the Kafka check's)."""
        record = self._new(instance_id, model_id, body, spark_header)
        checked = ["authorization", f"published model {model_id}", "request body", f"{SPARK_HEADER} header",
                   f"plan limit ({self.db.count_deployments(instance_id)} of {self.limit} deployments)"]
        return checked + self.streams.check(record)

    def _new(self, instance_id: str, model_id: str, body: DeploymentCreate,
             spark_header: str | None) -> DeploymentRecord:
        """The record a create would insert, after every check of the request."""
        self.model(instance_id, model_id)
        if body.type != "stream":
            raise APIError(400, "unsupported_deployment_type",
                           f"Deployments of type `{body.type}` are not supported; this service runs `stream`.")
        if body.input is None or body.output is None:
            missing = "input" if body.input is None else "output"
            raise APIError(400, "missing_field", f"A stream deployment needs `{missing}`.")
        spark = parse_spark_header(spark_header)
        on_spark = spark_master(spark, self.streams.spark_masters) is not None
        model = self.deployable(instance_id, model_id, on_spark)
        if self.db.count_deployments(instance_id) >= self.limit:
            raise APIError(400, "deployments_plan_limit_reached",
                           f"Current plan '{self.plan}' only allows {self.limit} deployments")
        now = now_iso()
        stopped = body.initial_status == STOPPED
        return DeploymentRecord(
            id=str(uuid.uuid4()), instance_id=instance_id, model_id=model_id,
            body=body.model_dump(mode="json", exclude_none=True), spark=spark,
            status=STOPPED if stopped else INITIALIZING, status_details=None,
            desired=STOPPED if stopped else RUNNING, created_at=now, modified_at=now,
            model_version=model.version_id if isinstance(model, PublishedUserModel) else None)

    def patch(self, instance_id: str, model_id: str, deployment_id: str, raw: Any,
              spark_header: str | None) -> None:
        record = self.deployment_of_model(instance_id, model_id, deployment_id)
        if not isinstance(raw, list) or len(raw) != 1 or not isinstance(raw[0], dict) \
                or raw[0].get("op") != "replace":
            raise APIError(400, "patch_multiple_ops", "Patch operation expects exactly one replace operation.")
        kind = record.body.get("type", "stream")
        if kind != "stream":
            raise APIError(400, "patch_not_supported", f"Patch operation is not allowed for instance of type `{kind}`")
        path = raw[0].get("path")
        if path != STATUS_PATH:
            raise APIError(400, "wrong_stream_patch_path",
                           f"Path `{path}` is not allowed. Only allowed path for patch stream is `{STATUS_PATH}`")
        value = raw[0].get("value")
        if value not in (RUNNING, STOPPED):
            raise APIError(400, "invalid_status_value",
                           f"Value `{value}` is not allowed for `{STATUS_PATH}`: use `RUNNING` or `STOPPED`.")
        # What is left is the contract's operation (its unknown fields ignored).
        value = PatchOperation.model_validate(raw[0]).value
        if spark_header is not None:
            parse_spark_header(spark_header)
        if value == STOPPED:
            if record.status != STOPPED or record.desired != STOPPED:
                self.db.set_desired(record.id, STOPPED)
                self.streams.stop(record.id)
        elif record.desired != RUNNING or record.status in (STOPPED, FAILED):
            # Starting a FAILED stream is how a user retries it after fixing what failed.
            self.db.set_desired(record.id, RUNNING)
            self.db.set_status(record.id, INITIALIZING, None)
            self.streams.start(self.deployment(instance_id, record.id))

    def delete(self, instance_id: str, deployment_id: str, model_id: str | None = None) -> None:
        record = (self.deployment_of_model(instance_id, model_id, deployment_id) if model_id
                  else self.deployment(instance_id, deployment_id))
        self.streams.remove(record)  # deletes its row too, with what its cleanup needs

    def resume_all(self) -> int:
        """After a restart: every deployment whose user wanted it RUNNING runs again."""
        resumed = 0
        for record in self.db.all_deployments():
            if record.desired == RUNNING and record.body.get("type", "stream") == "stream":
                self.db.set_status(record.id, INITIALIZING, None)
                self.streams.start(record)
                resumed += 1
            elif record.status != STOPPED and record.desired == STOPPED:
                # A stop the last process did not finish (a Spark driver may still run: it is stopped now); its
                # position is what the broker has committed.
                self.streams.stop(record.id)
                self.db.set_status(record.id, STOPPED, None, self.streams.committed(record.id))
        return resumed


def parse_spark_header(value: str | None) -> dict[str, Any]:
    if value is None or not value.strip():
        raise APIError(400, "missing_spark_service_instance",
                       f"For type stream spark instance must be provided in `{SPARK_HEADER}` header")
    try:
        spark = SparkServiceInstance.from_header(value)
    except ValueError:
        raise APIError(400, "spark_header_deserialization_error",
                       f"The `{SPARK_HEADER}` header could not be decoded: expected base64 of a JSON object "
                       "with `credentials` and `version`.") from None
    return spark.model_dump(mode="json")
