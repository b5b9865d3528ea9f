"""Pydantic models of every v3 request and response body (see shared/reference/wml-v3-api.md).

Every model accepts unknown fields: a real server sends more than the reference documents, and a client
that broke on them would break on the original platform. Secrets stay intact in `model_dump()` (the service
stores what it is sent) but are masked in `repr()`/`str()`, which is what ends up in logs.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import Field, field_validator, model_validator

# The Spark header models live in their own module; they are part of this contract, so re-exported here.
from wml_api.spark import SPARK_HEADER, SparkCredentials, SparkHeaderError, SparkServiceInstance
from wml_api.wire import MASK, SECRET_KEYS, WireModel, describe_errors, describe_validation_error, mask_secrets

__all__ = [
    "EXTENSIONS", "EXT_DEAD_LETTER_TOPIC", "EXT_DRY_RUN", "EXT_INITIAL_STATUS", "EXT_LAG", "EXT_POSITION",
    "EXT_STARTING_OFFSETS", "MASK", "SECRET_KEYS", "SPARK_HEADER", "STATUS_PATH", "Author", "CountedLink",
    "DeployableAsset", "DeployedVersion", "Deployment",
    "DeploymentCreate", "DeploymentEntity", "DeploymentList", "DeploymentMetadata", "DeploymentStatus",
    "DryRunReport", "ErrorBody", "ErrorItem", "Failure", "InstanceEntity", "KafkaConnection", "KafkaSource",
    "KafkaTarget", "Link", "PatchOperation", "PublishedModel", "PublishedModelEntity", "PublishedModelList",
    "PublishedModelRef", "ResourceList", "ResourceMetadata", "SparkCredentials", "SparkHeaderError", "SparkService",
    "SparkServiceInstance", "StartingOffsets", "StatusDetails", "StreamInput", "StreamOutput", "StreamPosition",
    "TokenRefreshRequest", "TokenResponse", "WMLInstance", "WireModel", "describe_errors",
    "describe_validation_error", "mask_secrets", "status_patch",
]

# --- stream deployment request -----------------------------------------------------------------------


class KafkaConnection(WireModel):
    _secret_fields = frozenset({"password", "api_key"})

    kafka_brokers_sasl: list[str] = Field(min_length=1)
    kafka_admin_url: str | None = None
    kafka_rest_url: str | None = None
    mqlight_lookup_url: str | None = None
    api_key: str | None = None
    user: str | None = None
    password: str | None = None
    # Ours, not the original's: Message Hub was always SASL over TLS; a local broker may run SASL without TLS.
    security_protocol: Literal["SASL_SSL", "SASL_PLAINTEXT"] = "SASL_SSL"

    @field_validator("kafka_brokers_sasl", mode="before")
    @classmethod
    def _split_brokers(cls, value: Any) -> Any:
        # A Kubernetes Secret naturally holds "host1:9093,host2:9093".
        if isinstance(value, str):
            return [b.strip() for b in value.split(",") if b.strip()]
        return value


StartingOffsets = Literal["earliest", "latest"]


class KafkaSource(WireModel):
    topic: str = Field(min_length=1)
    type: Literal["kafka"] = "kafka"
    # Extensions (EXT_STARTING_OFFSETS): where the stream starts reading. A partition starts at the group's
    # committed offset when it has one; else at `start_position` (a position handed over from a deployment
    # this one replaces: partition -> the next offset to read); else per `starting_offsets` (default
    # earliest, the original's behaviour).
    starting_offsets: StartingOffsets | None = None
    start_position: dict[str, int] | None = None

    @field_validator("start_position")
    @classmethod
    def _partitions(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None:
            for partition, offset in value.items():
                if not partition.isdigit() or offset < 0:
                    raise ValueError("start_position maps partition numbers (\"0\") to offsets >= 0")
        return value


class KafkaTarget(WireModel):
    topic: str = Field(min_length=1)
    type: Literal["kafka"] = "kafka"
    # Extension (EXT_DEAD_LETTER_TOPIC): records that cannot be scored go to this topic, on the output's
    # connection, instead of `topic`, in the same transaction as the output. Absent: they go to `topic` with
    # their `error` (the original's behaviour).
    dead_letter_topic: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _dead_letter_elsewhere(self) -> KafkaTarget:
        if self.dead_letter_topic is not None and self.dead_letter_topic == self.topic:
            raise ValueError(f"dead_letter_topic must be another topic than the output topic '{self.topic}'")
        return self


class StreamInput(WireModel):
    connection: KafkaConnection
    source: KafkaSource


class StreamOutput(WireModel):
    connection: KafkaConnection
    target: KafkaTarget


class DeploymentCreate(WireModel):
    """POST body. `online` and `batch` parse so that a server can refuse them with a clear 400 of its own."""

    name: str = Field(min_length=1)
    type: Literal["stream", "online", "batch"] = "stream"
    description: str | None = None
    input: StreamInput | None = None
    output: StreamOutput | None = None
    # Extension (EXT_INITIAL_STATUS): STOPPED creates the deployment without starting it: nothing is consumed
    # or produced until a PATCH sets it RUNNING. The original starts every new deployment.
    initial_status: Literal["RUNNING", "STOPPED"] | None = None


# --- deployments ---------------------------------------------------------------------------------------


class DeploymentStatus(StrEnum):
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


class ErrorItem(WireModel):
    code: str
    message: str


class Failure(WireModel):
    errors: list[ErrorItem] = Field(default_factory=list)


class StreamPosition(WireModel):
    """Extension (EXT_POSITION): where a stream stands in its input topic: per partition, the next offset it
    will read (everything before it is scored and committed). Final once the deployment is STOPPED."""

    topic: str
    offsets: dict[str, int] = Field(default_factory=dict)


class StatusDetails(WireModel):
    failure: Failure | None = None
    position: StreamPosition | None = None  # extension EXT_POSITION
    lag: int | None = None  # extension EXT_LAG: records in the input topic not yet read, as last measured


class Author(WireModel):
    name: str | None = None
    email: str | None = None


class PublishedModelRef(WireModel):
    guid: str
    name: str | None = None
    url: str | None = None
    description: str | None = None
    created_at: str | None = None
    author: Author | None = None


class DeployedVersion(WireModel):
    guid: str
    url: str | None = None
    created_at: str | None = None


class DeployableAsset(WireModel):
    """What a deployment runs, as the v3 clients' tables of deployments read it."""

    guid: str
    name: str | None = None
    url: str | None = None
    type: str = "model"
    created_at: str | None = None


class SparkService(WireModel):
    credentials: dict[str, Any] = Field(default_factory=dict)
    version: str | None = None


class ResourceMetadata(WireModel):
    guid: str
    url: str | None = None
    created_at: str | None = None
    modified_at: str | None = None


DeploymentMetadata = ResourceMetadata


class DeploymentEntity(WireModel):
    # `type` and `status` are plain strings: a real server may know kinds and states this contract does not.
    type: str
    name: str
    description: str | None = None
    status: str
    status_details: StatusDetails | None = None
    status_message: str | None = None
    runtime_environment: str | None = None
    model_type: str | None = None
    instance_href: str | None = None
    published_model: PublishedModelRef | None = None
    deployed_version: DeployedVersion | None = None
    deployable_asset: DeployableAsset | None = None
    spark_service: SparkService | None = None
    input: StreamInput | None = None
    output: StreamOutput | None = None


class Deployment(WireModel):
    metadata: DeploymentMetadata
    entity: DeploymentEntity

    @property
    def id(self) -> str:
        return self.metadata.guid

    @property
    def status(self) -> str:
        return self.entity.status

    @property
    def model_id(self) -> str | None:
        """The published model's id, from the entity or else from `.../published_models/<mid>/deployments/...`."""
        if self.entity.published_model is not None:
            return self.entity.published_model.guid
        parts = (self.metadata.url or "").split("/")
        if "published_models" in parts:
            i = parts.index("published_models")
            return parts[i + 1] if i + 1 < len(parts) and parts[i + 1] else None
        return None

    @property
    def failure_message(self) -> str | None:
        details = self.entity.status_details
        if details is not None and details.failure is not None:
            for error in details.failure.errors:
                if error.message:
                    return error.message
        return self.entity.status_message or None


# --- lists, models, instance ---------------------------------------------------------------------------


class Link(WireModel):
    url: str


class CountedLink(Link):
    count: int | None = None


T = TypeVar("T")


class ResourceList(WireModel, Generic[T]):
    count: int
    resources: list[T] = Field(default_factory=list)
    limit: int | None = None
    first: Link | None = None
    next: Link | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_count(cls, data: Any) -> Any:
        # Some servers omit `count` on paged lists; the page's length is the honest fallback.
        if isinstance(data, dict) and "count" not in data:
            return {**data, "count": len(data.get("resources") or [])}
        return data


class PublishedModelEntity(WireModel):
    name: str | None = None
    description: str | None = None
    author: Author | None = None
    model_type: str | None = None
    runtime_environment: str | None = None
    label_col: str | None = None
    input_data_schema: dict[str, Any] | None = None
    deployments: CountedLink | None = None
    latest_version: DeployedVersion | None = None


class PublishedModel(WireModel):
    metadata: ResourceMetadata
    entity: PublishedModelEntity

    @property
    def id(self) -> str:
        return self.metadata.guid


class InstanceEntity(WireModel):
    status: str | None = None
    plan_id: str | None = None
    usage: dict[str, Any] | None = None
    published_models: Link | None = None
    deployments: Link | None = None
    # Which of this project's extensions the server supports (EXT_*): absent on the original.
    extensions: list[str] = Field(default_factory=list)


class WMLInstance(WireModel):
    metadata: ResourceMetadata
    entity: InstanceEntity

    @property
    def id(self) -> str:
        return self.metadata.guid


DeploymentList = ResourceList[Deployment]
PublishedModelList = ResourceList[PublishedModel]


# --- patch, tokens, errors -----------------------------------------------------------------------------


class PatchOperation(WireModel):
    """One JSON Patch operation; a stream deployment takes exactly one, replacing `/status`."""

    op: Literal["replace"] = "replace"
    path: str
    value: str


STATUS_PATH = "/status"


def status_patch(status: str) -> list[dict[str, str]]:
    """The one-operation PATCH body that starts (RUNNING) or stops (STOPPED) a stream."""
    return [PatchOperation(path=STATUS_PATH, value=str(status)).model_dump(mode="json")]


class TokenResponse(WireModel):
    """GET /v3/identity/token (and the v2 path), PUT /v3/identity/token: the bearer token."""

    token: str = Field(min_length=1)


class TokenRefreshRequest(WireModel):
    """PUT /v3/identity/token body: the old token, possibly expired."""

    token: str = Field(min_length=1)


class DryRunReport(WireModel):
    """Extension (EXT_DRY_RUN): `POST .../deployments?dry_run=true` answers 200 with what it checked, or the
    error the create would have answered, and creates nothing."""

    checked: list[str] = Field(default_factory=list)


# --- this project's extensions of the v3 API -------------------------------------------------------------
# A server lists those it supports in its instance's `entity.extensions`; a client uses one only when listed
# (a server without it would ignore an unknown field, or create for real on `?dry_run=true`).
EXT_INITIAL_STATUS = "initial_status"  # DeploymentCreate.initial_status
EXT_STARTING_OFFSETS = "starting_offsets"  # KafkaSource.starting_offsets and .start_position
EXT_DRY_RUN = "dry_run"  # POST .../deployments?dry_run=true
EXT_POSITION = "position"  # StatusDetails.position
EXT_LAG = "lag"  # StatusDetails.lag
EXT_DEAD_LETTER_TOPIC = "dead_letter_topic"  # KafkaTarget.dead_letter_topic
EXTENSIONS = (EXT_INITIAL_STATUS, EXT_STARTING_OFFSETS, EXT_DRY_RUN, EXT_POSITION, EXT_LAG, EXT_DEAD_LETTER_TOPIC)


class ErrorBody(WireModel):
    """Every error answer: `{"trace": "<id>", "errors": [{"code", "message"}]}`."""

    trace: str
    errors: list[ErrorItem]
