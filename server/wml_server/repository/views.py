"""How users' models look on the wire: as repository assets (`/v3/ml_assets/models`) and as published models."""

from __future__ import annotations

import platform

from wml_api.models import Author, CountedLink, DeployedVersion, PublishedModel, PublishedModelEntity, ResourceMetadata
from wml_api.paths import MODEL_DEPLOYMENTS, fill
from wml_api.repository import (
    ML_ASSETS_MODEL,
    ML_ASSETS_VERSION,
    ML_ASSETS_VERSION_CONTENT,
    ML_ASSETS_VERSIONS,
    ContentStatus,
    Framework,
    ModelAsset,
    ModelAssetEntity,
    ModelVersion,
    ModelVersionEntity,
    VersionRef,
)
from wml_server.repository.store import PENDING, ModelRecord, VersionRecord
from wml_server.views import model_url, version_url


def asset_url(base: str, model_id: str) -> str:
    return base + fill(ML_ASSETS_MODEL, model_id=model_id)


def version_ref(base: str, version: VersionRecord) -> VersionRef:
    ids = {"model_id": version.model_id, "version_id": version.id}
    return VersionRef(guid=version.id, url=base + fill(ML_ASSETS_VERSION, **ids),
                      content_url=base + fill(ML_ASSETS_VERSION_CONTENT, **ids), created_at=version.created_at)


def render_asset(base: str, record: ModelRecord, model_version: VersionRecord | None = None) -> ModelAsset:
    """`model_version`: the version shown as `entity.model_version`, where the v3 client uploads content (one
    waiting for it) or downloads it from (`repository.load`: the latest)."""
    meta = record.meta
    latest = record.latest
    entity = ModelAssetEntity.model_validate({
        **meta,
        "framework": Framework.model_validate(meta["framework"]),
        "model_type": f"{record.framework}-{record.framework_version}",
        "runtime_environment": _runtime(meta),
        "latest_version": version_ref(base, latest) if latest else None,
        "versions_url": base + fill(ML_ASSETS_VERSIONS, model_id=record.id),
        "content_status": ContentStatus(state=latest.state if latest else PENDING),
        "content_format": latest.format if latest else None,
        "model_version": version_ref(base, model_version) if model_version else None,
    })
    return ModelAsset(metadata=ResourceMetadata(guid=record.id, url=asset_url(base, record.id),
                                                created_at=record.created_at, modified_at=record.modified_at),
                      entity=entity)


def render_version(base: str, version: VersionRecord) -> ModelVersion:
    ref = version_ref(base, version)
    return ModelVersion(
        metadata=ResourceMetadata(guid=version.id, url=ref.url, created_at=version.created_at,
                                  modified_at=version.created_at),
        entity=ModelVersionEntity(model_url=asset_url(base, version.model_id), content_url=ref.content_url,
                                  content_status=ContentStatus(state=version.state), content_format=version.format,
                                  content_size=version.size, content_sha256=version.sha256))


def render_published(base: str, record: ModelRecord, deployments: int) -> PublishedModel:
    """A user's model among the instance's published models (only once a version has content)."""
    assert record.latest is not None
    meta, iid, mid = record.meta, record.instance_id, record.id
    author = meta.get("author")
    return PublishedModel(
        metadata=ResourceMetadata(guid=mid, url=model_url(base, iid, mid),
                                  created_at=record.created_at, modified_at=record.modified_at),
        entity=PublishedModelEntity.model_validate({
            "name": record.name, "description": meta.get("description"),
            "author": Author.model_validate(author) if isinstance(author, dict) else None,
            "model_type": f"{record.framework}-{record.framework_version}",
            "runtime_environment": _runtime(meta), "label_col": meta.get("label_column"),
            "input_data_schema": meta.get("input_data_schema"),
            "training_data_schema": meta.get("training_data_schema"),
            "label_values": meta.get("label_values"),
            # the v3 client's get_model_uid/get_model_url prefer these
            "ml_asset_guid": mid, "ml_asset_url": asset_url(base, mid),
            "content_format": record.latest.format,
            "latest_version": DeployedVersion(guid=record.latest.id, created_at=record.latest.created_at,
                                              url=version_url(base, iid, mid, record.latest.id)),
            "deployments": CountedLink(count=deployments,
                                       url=base + fill(MODEL_DEPLOYMENTS, instance_id=iid, model_id=mid)),
        }))


def _runtime(meta: dict[str, object]) -> str:
    """`python-3.11` from the framework's declared runtimes, as the v3 API reported it."""
    framework = meta.get("framework")
    runtimes = framework.get("runtimes") if isinstance(framework, dict) else None
    if isinstance(runtimes, list) and runtimes and isinstance(runtimes[0], dict):
        name, version = runtimes[0].get("name"), runtimes[0].get("version")
        if isinstance(name, str) and name:
            return f"{name}-{version}" if version else name
    return f"python-{platform.python_version()}"
