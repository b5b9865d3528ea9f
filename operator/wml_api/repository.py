"""The v3 repository API (`/v3/ml_assets/models`): how a model is published, as the v3 clients did it.

A model is created with its metadata (name, framework, input schema, label column), then a version, then the
version's content is uploaded; the model then appears among the instance's published models
(`/v3/wml_instances/{iid}/published_models`). Shapes follow the v3-era Python client
(`watson-machine-learning-client` 1.0.x, its `libs/repo/swagger_client`), which is the reference for the wire.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from wml_api.models import Author, ResourceList, ResourceMetadata
from wml_api.wire import WireModel

# Paths: not instance-scoped; the caller's token says which instance a model belongs to.
ML_ASSETS_MODELS = "/v3/ml_assets/models"
ML_ASSETS_MODEL = ML_ASSETS_MODELS + "/{model_id}"
ML_ASSETS_VERSIONS = ML_ASSETS_MODEL + "/versions"
ML_ASSETS_VERSION = ML_ASSETS_VERSIONS + "/{version_id}"
ML_ASSETS_VERSION_CONTENT = ML_ASSETS_VERSION + "/content"
ML_ASSETS_MODEL_CONTENT = ML_ASSETS_MODEL + "/content"


class Runtime(WireModel):
    name: str
    version: str | None = None


class Framework(WireModel):
    """`{"name": "scikit-learn", "version": "0.19", "runtimes": [{"name": "python", "version": "3.5"}]}`."""

    name: str = Field(min_length=1)
    version: str | None = None
    runtimes: list[Runtime] | None = None


class ModelAssetCreate(WireModel):
    """POST /v3/ml_assets/models: the model's metadata (its content comes with a version)."""

    name: str = Field(min_length=1, max_length=256)
    description: str | None = None
    framework: Framework
    author: Author | None = None
    label_column: str | None = None
    # Spark's StructType as JSON: {"type": "struct", "fields": [{"name", "type", "nullable", "metadata"}]}.
    # Any JSON here: the service checks it and answers `invalid_input_schema` saying what is wrong.
    input_data_schema: Any = None
    training_data_schema: Any = None
    # Extension: the values the model predicts (e.g. ["NEGATIVE", "POSITIVE"]), shown in its metadata.
    label_values: list[str | int | float | bool] | None = None


class VersionRef(WireModel):
    guid: str
    url: str | None = None
    content_url: str | None = None
    created_at: str | None = None


class ContentStatus(WireModel):
    """`persisted` once a version's content is stored and checked; `pending` before it is uploaded."""

    state: str


class ModelAssetEntity(WireModel):
    name: str
    description: str | None = None
    framework: Framework
    author: Author | None = None
    label_column: str | None = None
    input_data_schema: dict[str, Any] | None = None
    training_data_schema: dict[str, Any] | None = None
    label_values: list[str | int | float | bool] | None = None
    model_type: str | None = None
    runtime_environment: str | None = None
    latest_version: VersionRef | None = None
    # The version a create answers with (`POST /v3/ml_assets/models`): the one waiting for the content.
    model_version: VersionRef | None = None
    versions_url: str | None = None
    content_status: ContentStatus | None = None
    # Extension: how the content is stored ("pickle", "joblib", "skops", "mllib"), once uploaded.
    content_format: str | None = None


class ModelAsset(WireModel):
    metadata: ResourceMetadata
    entity: ModelAssetEntity

    @property
    def id(self) -> str:
        return self.metadata.guid


class ModelVersionEntity(WireModel):
    model_url: str | None = None
    content_url: str | None = None
    content_status: ContentStatus
    content_format: str | None = None
    content_size: int | None = None
    content_sha256: str | None = None


class ModelVersion(WireModel):
    metadata: ResourceMetadata
    entity: ModelVersionEntity

    @property
    def id(self) -> str:
        return self.metadata.guid


ModelAssetList = ResourceList[ModelAsset]
ModelVersionList = ResourceList[ModelVersion]
