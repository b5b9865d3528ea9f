"""The StreamingDeployment resource as pydantic models: the spec users write and the status we report.

These models are the one source of truth: the CRD in crds/ is generated from them (wml_operator.crd) and a
test fails when the two disagree. Every field has a description, so `kubectl explain` documents it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

GROUP = "wmlstream.dev"
VERSION = "v1alpha1"
KIND = "StreamingDeployment"
PLURAL = "streamingdeployments"
SINGULAR = "streamingdeployment"
SHORT_NAMES = ["sdep"]
CATEGORIES = ["wml"]
FINALIZER = f"{GROUP}/finalizer"
ANNOTATION_RECONCILE = f"{GROUP}/reconcile"  # "paused": observe and report only
ANNOTATION_DEPLOYMENT_ID = f"{GROUP}/deployment-id"  # adopt this existing deployment
ANNOTATION_POLL_INTERVAL = f"{GROUP}/poll-interval"  # seconds, overrides the steady poll interval

# Kubernetes object names; a Secret key is any of [-._a-zA-Z0-9]+.
_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_KEY = r"^[-._a-zA-Z0-9]+$"
_UUIDISH = r"^[A-Za-z0-9][-A-Za-z0-9_.]*$"


class State(StrEnum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    ORPHAN = "Orphan"


class RestartPolicy(StrEnum):
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


class _Model(BaseModel):
    # Unknown fields are refused here as in the CRD's structural schema: a typo must not pass silently.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=True)


class SecretRef(_Model):
    """A Secret in the resource's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=_NAME,
                               description="Name of the Secret, in the StreamingDeployment's namespace.")]


class SecretKeyRef(SecretRef):
    """One key of a Secret in the resource's namespace."""

    key: Annotated[str, Field(min_length=1, max_length=253, pattern=_KEY,
                              description="Key of the Secret whose value is used.")]


class OptionalKeySecretRef(SecretRef):
    """A Secret holding a Kafka connection: one key per field, or one key holding the whole JSON."""

    key: Annotated[str | None, Field(default=None, min_length=1, max_length=253, pattern=_KEY,
                                     description="When set, this key holds the whole connection JSON as the "
                                                 "platform's service credentials gave it; when unset, the "
                                                 "Secret has one key per field (kafka_brokers_sasl, user, "
                                                 "password, api_key, kafka_admin_url, kafka_rest_url, "
                                                 "mqlight_lookup_url, security_protocol).")]


class WMLEndpoint(_Model):
    """Where the WML v3 API is, and how to authenticate to it."""

    url: Annotated[str | None, Field(default=None, max_length=2048, pattern=r"^https?://[^\s@]+$",
                                     description="Base URL of the WML API, e.g. https://wml.example.com. "
                                                 "Defaults to the `url` key of the credentials Secret, then to "
                                                 "the operator's default endpoint.")]
    instance_id: Annotated[str | None, Field(default=None, alias="instanceId", max_length=128, pattern=_UUIDISH,
                                             description="The WML instance id. Defaults to the `instance_id` "
                                                         "key of the credentials Secret, then to the "
                                                         "operator's default.")]
    credentials_secret_ref: Annotated[SecretRef | None, Field(
        default=None, alias="credentialsSecretRef",
        description="Secret with keys `username` and `password` (and optionally `url`, `instance_id`). "
                    "Defaults to the operator's default credentials Secret.")]
    ca_secret_ref: Annotated[SecretKeyRef | None, Field(
        default=None, alias="caSecretRef",
        description="PEM CA bundle to trust for the WML API's TLS certificate (system trust otherwise).")]


_TOPIC = r"^[a-zA-Z0-9._-]+$"


class KafkaSide(_Model):
    topic: Annotated[str, Field(min_length=1, max_length=249, pattern=_TOPIC, description="The Kafka topic.")]
    connection_secret_ref: Annotated[OptionalKeySecretRef, Field(
        alias="connectionSecretRef", description="Secret holding the Kafka connection (brokers and SASL "
                                                 "credentials) of this topic.")]


class StartingOffsets(StrEnum):
    EARLIEST = "earliest"
    LATEST = "latest"


class InputSide(KafkaSide):
    starting_offsets: Annotated[StartingOffsets, Field(
        default=StartingOffsets.EARLIEST, alias="startingOffsets",
        description="Where a new deployment starts reading when there is no position to hand over (the first "
                    "deployment, another topic or other brokers): earliest (every record in the topic) or "
                    "latest (only records that come after it starts). A re-create on the same topic continues "
                    "where the replaced deployment stopped, whatever this says. Changing it re-creates nothing.")]
    keep_position_on_topic_change: Annotated[bool, Field(
        default=False, alias="keepPositionOnTopicChange",
        description="When `topic` changes, start the new topic at the partition offsets the old one had "
                    "reached (for a topic copied with its offsets, e.g. by a mirror), instead of at "
                    "`startingOffsets`.")]


class OutputSide(KafkaSide):
    # The same rule as the validator below, checked by the API server when the resource is applied.
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "!has(self.deadLetterTopic) || self.deadLetterTopic != self.topic",
        "message": "deadLetterTopic must be another topic than the output topic"}]})

    dead_letter_topic: Annotated[str | None, Field(
        default=None, alias="deadLetterTopic", min_length=1, max_length=249, pattern=_TOPIC,
        description="Records that cannot be scored (not JSON, not an object, no text, too large, ...) go to this "
                    "topic instead of `topic`, on the same connection and in the same Kafka transaction: each "
                    "record ends up exactly once in one of the two. Unset: they go to `topic` with an `error` "
                    "field. Must differ from `topic`; needs a WML server that supports it (else Stalled, "
                    "nothing created). Changing it re-creates the deployment, handing its position over.")]

    @model_validator(mode="after")
    def _dead_letter_elsewhere(self) -> OutputSide:
        if self.dead_letter_topic is not None and self.dead_letter_topic == self.topic:
            raise ValueError("deadLetterTopic must be another topic than the output topic")
        return self


class ModelRef(_Model):
    """A PublishedModel in the resource's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=_NAME,
                               description="Name of the PublishedModel, in the StreamingDeployment's namespace.")]


class StreamingDeploymentSpec(_Model):
    """A stream deployment of a published model: records from `input.topic` scored onto `output.topic`."""

    # The same rule as the validator below, checked by the API server when the resource is applied.
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "has(self.modelId) != has(self.modelRef)",
        "message": "exactly one of modelId and modelRef must be set"}]})

    state: Annotated[State, Field(default=State.RUNNING,
                                  description="Declared state of the stream: RUNNING or STOPPED.")]
    description: Annotated[str | None, Field(default=None, max_length=1024,
                                             description="Free text shown as the deployment's description.")]
    wml: Annotated[WMLEndpoint | None, Field(default=None, description="The WML API to use; optional when the "
                                                                        "operator has a default endpoint.")]
    model_id: Annotated[str | None, Field(
        default=None, alias="modelId", min_length=1, max_length=128, pattern=_UUIDISH,
        description="Id (guid) of the published model to deploy. Exactly one of modelId and modelRef.")]
    model_ref: Annotated[ModelRef | None, Field(
        default=None, alias="modelRef",
        description="The PublishedModel to deploy, instead of a modelId: the stream waits until it is Ready, "
                    "and each new version it publishes re-creates the deployment, handing its position over "
                    "(nothing lost, nothing scored twice). Exactly one of modelId and modelRef.")]
    spark_credentials_secret_ref: Annotated[SecretKeyRef, Field(
        alias="sparkCredentialsSecretRef",
        description="Secret key holding the Spark service credentials JSON (tenant_id, tenant_id_full, "
                    "cluster_master_url, instance_id, tenant_secret, plan), sent as X-Spark-Service-Instance.")]
    input: Annotated[InputSide, Field(description="Where records come from.")]
    output: Annotated[OutputSide, Field(description="Where scored records go.")]
    deletion_policy: Annotated[DeletionPolicy, Field(
        default=DeletionPolicy.DELETE, alias="deletionPolicy",
        description="Delete: deleting the resource deletes the WML deployment. Orphan: leaves it running.")]
    restart_policy: Annotated[RestartPolicy, Field(
        default=RestartPolicy.ON_FAILURE, alias="restartPolicy",
        description="OnFailure: a FAILED stream is restarted with exponential backoff. Never: it stays FAILED.")]

    @model_validator(mode="after")
    def _one_model(self) -> StreamingDeploymentSpec:
        if (self.model_id is None) == (self.model_ref is None):
            raise ValueError("exactly one of modelId and modelRef must be set")
        return self


class Condition(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    type: Annotated[str, Field(description="Ready, Reconciling or Stalled.")]
    status: Annotated[str, Field(description="True, False or Unknown.")]
    reason: Annotated[str, Field(description="One CamelCase word for machines.")]
    message: Annotated[str, Field(default="", description="What happened, for humans.")]
    last_transition_time: Annotated[str, Field(alias="lastTransitionTime",
                                               description="When status last changed.")]
    observed_generation: Annotated[int | None, Field(default=None, alias="observedGeneration",
                                                     description="metadata.generation this condition is about.")]


class KopfState(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    last_handled_configuration: Annotated[str | None, Field(
        default=None, alias="last-handled-configuration",
        description="kopf's copy of the spec, labels and annotations it last handled (JSON): how it tells a "
                    "change from a resync. Written with the status, in one request.")]


class EndpointStatus(BaseModel):
    """Where the WML deployment lives, by name (never a credential): a re-create after `spec.wml` changed stops
    and deletes the old deployment there."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    url: Annotated[str, Field(description="Base URL of the WML API.")]
    instance_id: Annotated[str, Field(alias="instanceId", description="The WML instance id.")]
    credentials_secret: Annotated[str | None, Field(
        default=None, alias="credentialsSecret", description="namespace/name of the Secret with its login.")]
    ca_secret: Annotated[str | None, Field(default=None, alias="caSecret",
                                           description="name/key of the Secret with its CA bundle, if any.")]


class StreamingDeploymentStatus(BaseModel):
    """What the operator observed. Never holds a credential."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    observed_generation: Annotated[int | None, Field(default=None, alias="observedGeneration",
                                                     description="The metadata.generation last reconciled.")]
    deployment_id: Annotated[str | None, Field(default=None, alias="deploymentId",
                                               description="Id (guid) of the WML deployment.")]
    deployment_url: Annotated[str | None, Field(default=None, alias="deploymentUrl",
                                                description="metadata.url of the WML deployment.")]
    wml_status: Annotated[str | None, Field(default=None, alias="wmlStatus",
                                            description="The deployment's status in WML: INITIALIZING, RUNNING, "
                                                        "STOPPED or FAILED.")]
    message: Annotated[str | None, Field(default=None, description="Last notable message (e.g. WML's failure "
                                                                   "reason).")]
    restart_count: Annotated[int, Field(default=0, alias="restartCount",
                                        description="Restarts of a FAILED stream by restartPolicy OnFailure.")]
    last_restart_time: Annotated[str | None, Field(default=None, alias="lastRestartTime",
                                                   description="When the operator last restarted a FAILED "
                                                               "stream.")]
    last_sync_time: Annotated[str | None, Field(default=None, alias="lastSyncTime",
                                                description="When the WML deployment was last observed.")]
    model_id: Annotated[str | None, Field(default=None, alias="modelId",
                                          description="Id of the published model the deployment runs.")]
    model_version: Annotated[str | None, Field(default=None, alias="modelVersion",
                                               description="The model's version the deployment runs, for a "
                                                           "modelRef: a new one re-creates the deployment.")]
    spec_hash: Annotated[str | None, Field(default=None, alias="specHash",
                                           description="Hash of everything the deployment was built from (model, "
                                                       "topics, WML endpoint, and the contents of the referenced "
                                                       "Secrets); a change re-creates the deployment.")]
    endpoint: Annotated[EndpointStatus | None, Field(default=None,
                                                     description="The WML endpoint the deployment lives on.")]
    lag: Annotated[int | None, Field(default=None, description="Records in the input topic the stream has not "
                                                               "read yet, as WML last reported (if it does).")]
    hand_over: Annotated[str | None, Field(default=None, alias="handOver",
                                           description="Where the deployment started reading: the position "
                                                       "handed over from the one it replaced, or why none was.")]
    conditions: Annotated[list[Condition], Field(default_factory=list,
                                                 description="Ready, Reconciling and Stalled (kstatus).")]
    kopf: Annotated[KopfState | None, Field(default=None, description="The operator framework's bookkeeping.")]


def parse_spec(raw: object) -> StreamingDeploymentSpec:
    return StreamingDeploymentSpec.model_validate(raw)
