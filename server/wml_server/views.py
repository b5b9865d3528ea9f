"""How stored deployments, models and instances look on the wire: as the contract's own models (wml_api), so
what the service sends is what the operator parses, and the OpenAPI document is generated from them.

Credentials are masked in every response: the original echoed them back; this service deliberately does not.
"""

from __future__ import annotations

import uuid

from wml_api.models import (
    EXTENSIONS,
    Author,
    CountedLink,
    DeployableAsset,
    DeployedVersion,
    Deployment,
    DeploymentEntity,
    InstanceEntity,
    Link,
    PublishedModel,
    PublishedModelEntity,
    PublishedModelRef,
    ResourceMetadata,
    SparkService,
    StatusDetails,
    StreamInput,
    StreamOutput,
    StreamPosition,
    WMLInstance,
)
from wml_api.paths import (
    INSTANCE,
    INSTANCE_DEPLOYMENTS,
    MODEL,
    MODEL_DEPLOYMENT,
    MODEL_DEPLOYMENTS,
    MODEL_VERSION,
    MODELS,
    fill,
)
from wml_server.db import DeploymentRecord
from wml_server.engine.state import RUNNING, StreamState
from wml_server.models.base import ModelInfo
from wml_server.spark.placement import is_spark_master, spark_version


def version_id(model_id: str) -> str:
    """The one version each built-in model has, stable across instances and restarts."""
    return str(uuid.uuid5(uuid.UUID(model_id), "version-1"))


def instance_url(base: str, instance_id: str) -> str:
    return base + fill(INSTANCE, instance_id=instance_id)


def model_url(base: str, instance_id: str, model_id: str) -> str:
    return base + fill(MODEL, instance_id=instance_id, model_id=model_id)


def version_url(base: str, instance_id: str, model_id: str, version: str | None = None) -> str:
    """A version of a published model (the built-in models' one version when `version` is None)."""
    return base + fill(MODEL_VERSION, instance_id=instance_id, model_id=model_id,
                       version_id=version or version_id(model_id))


def deployment_url(base: str, record: DeploymentRecord) -> str:
    return base + fill(MODEL_DEPLOYMENT, instance_id=record.instance_id, model_id=record.model_id,
                       deployment_id=record.id)


def render_model(base: str, instance_id: str, model: ModelInfo, created_at: str, deployments: int) -> PublishedModel:
    url = model_url(base, instance_id, model.id)
    return PublishedModel(
        metadata=ResourceMetadata(guid=model.id, url=url, created_at=created_at, modified_at=created_at),
        entity=PublishedModelEntity(
            name=model.name, description=model.description, model_type=model.model_type,
            runtime_environment=model.runtime_environment, author=Author(name="wml-stream-operator", email=""),
            input_data_schema={"type": "struct", "fields": [{"name": "tweet", "type": "string"}]},
            label_col="prediction",
            latest_version=DeployedVersion(guid=version_id(model.id), url=version_url(base, instance_id, model.id),
                                           created_at=created_at),
            deployments=CountedLink(count=deployments, url=base + fill(MODEL_DEPLOYMENTS, instance_id=instance_id,
                                                                       model_id=model.id)),
        ),
    )


def runtime_environment(record: DeploymentRecord, model: ModelInfo | None) -> str | None:
    """`spark-<version>` for a deployment on Spark (the original's `spark-2.0`), else the model's runtime."""
    master = str(((record.spark or {}).get("credentials") or {}).get("cluster_master_url") or "").strip()
    if is_spark_master(master):
        return f"spark-{spark_version()}"
    return model.runtime_environment if model else None


def render_deployment(base: str, record: DeploymentRecord, model: ModelInfo | None,
                      live: StreamState | None = None) -> Deployment:
    """`live`: what the engine knows now (no Kafka call): its position and lag win over the stored position."""
    body = record.body
    details = StatusDetails.model_validate(record.status_details) if record.status_details else None
    first_error = next(iter(details.failure.errors), None) if details and details.failure else None
    # The lag is measured while the stream runs; a stopped stream's last measure would only mislead.
    position, lag = _position(record, live), live.lag if live is not None and live.status == RUNNING else None
    if position is not None or lag is not None:
        details = (details or StatusDetails()).model_copy(update={"position": position, "lag": lag})
    # A user's model: the version the deployment was created with; a built-in one has one version.
    version = record.model_version or version_id(record.model_id)
    entity = DeploymentEntity(
        type=body.get("type", "stream"), name=body.get("name", ""), description=body.get("description"),
        status=record.status, status_details=details,
        status_message=first_error.message if first_error else None,
        runtime_environment=runtime_environment(record, model),
        model_type=model.model_type if model else None,
        instance_href=deployment_url(base, record),
        published_model=PublishedModelRef(guid=record.model_id, name=model.name if model else None,
                                          url=model_url(base, record.instance_id, record.model_id),
                                          description=model.description if model else None,
                                          created_at=record.created_at),
        deployed_version=DeployedVersion(guid=version, url=version_url(base, record.instance_id, record.model_id,
                                                                       version), created_at=record.created_at),
        deployable_asset=DeployableAsset(guid=record.model_id, name=model.name if model else None,
                                         url=model_url(base, record.instance_id, record.model_id),
                                         created_at=record.created_at),
        # Stored as the create request validated them, so they parse; masked on the way out.
        spark_service=SparkService.model_validate(record.spark).masked() if record.spark is not None else None,
        input=StreamInput.model_validate(body["input"]).masked() if body.get("input") else None,
        output=StreamOutput.model_validate(body["output"]).masked() if body.get("output") else None,
    )
    return Deployment(metadata=ResourceMetadata(guid=record.id, url=deployment_url(base, record),
                                                created_at=record.created_at, modified_at=record.modified_at),
                      entity=entity)


def _position(record: DeploymentRecord, live: StreamState | None) -> StreamPosition | None:
    """EXT_POSITION: live while the engine knows it, else as stored when the stream last stopped cleanly."""
    if live is not None and live.position is not None:
        topic, offsets = live.position
        return StreamPosition(topic=topic, offsets=offsets)
    if record.position is not None:
        return StreamPosition.model_validate(record.position)
    return None


def render_instance(base: str, instance_id: str, created_at: str, plan: str, deployments: int,
                    limit: int, models: int) -> WMLInstance:
    url = instance_url(base, instance_id)
    # `plan` and `region` are fields the contract does not name (it keeps unknown fields): hence a dict.
    entity = InstanceEntity.model_validate({
        "status": "Active", "plan_id": plan, "plan": plan, "region": "local",
        "published_models": Link(url=base + fill(MODELS, instance_id=instance_id)),
        "deployments": Link(url=base + fill(INSTANCE_DEPLOYMENTS, instance_id=instance_id)),
        "usage": {"deployment_count": {"current": deployments, "limit": limit}, "model_count": {"current": models}},
        "extensions": list(EXTENSIONS),  # what a client may use here (docs/WML-API.md)
    })
    return WMLInstance(metadata=ResourceMetadata(guid=instance_id, url=url, created_at=created_at,
                                                 modified_at=created_at), entity=entity)

