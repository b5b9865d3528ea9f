"""Every model an instance can deploy: the built-in ones (in every instance) and those its users published."""

from __future__ import annotations

from typing import Any

from wml_server.models.base import Model
from wml_server.models.published import PublishedUserModel, WorkerOptions
from wml_server.models.registry import ModelRegistry
from wml_server.repository.schema import InputSchema, SchemaError, declared_schema, parse_schema
from wml_server.repository.store import ModelRecord, ModelStore, VersionRecord

_KEPT = 4096


class ModelCatalog:
    def __init__(self, builtins: ModelRegistry, store: ModelStore, options: WorkerOptions | None = None) -> None:
        self.builtins = builtins
        self.store = store
        self.options = options or WorkerOptions()
        # A version's metadata and content never change, and a model with deployments cannot be deleted: what
        # the listing of deployments asks for, once per deployment, is kept (bounded; ids are never reused).
        self._versions: dict[tuple[str, str, str], PublishedUserModel] = {}

    def get(self, instance_id: str, model_id: str, version_id: str | None = None) -> Model | PublishedUserModel | None:
        """The model (a user's at `version_id`, else its latest version with content), or None."""
        builtin = self.builtins.get(model_id)
        if builtin is not None:
            return builtin
        if version_id is not None and (known := self._versions.get((instance_id, model_id, version_id))):
            return known
        record = self.store.model(instance_id, model_id)
        if record is None:
            return None
        version = self.store.version(model_id, version_id) if version_id else record.latest
        if version is None or version.format is None:
            return None
        model = self.user_model(record, version)
        if len(self._versions) >= _KEPT:
            self._versions.clear()
        self._versions[(instance_id, model_id, version.id)] = model
        return model

    def user_model(self, record: ModelRecord, version: VersionRecord) -> PublishedUserModel:
        meta = record.meta
        store, model_id, version_id = self.store, record.id, version.id
        labels = meta.get("label_values")
        assert version.format is not None
        return PublishedUserModel(
            id=record.id, instance_id=record.instance_id, version_id=version.id, name=record.name,
            description=str(meta.get("description") or ""),
            model_type=f"{record.framework}-{record.framework_version}", framework=record.framework,
            content_format=version.format, schema=schema_of(meta), label_values=tuple(labels) if labels else None,
            read_content=lambda: store.read(model_id, version_id), options=self.options)


def schema_of(meta: dict[str, Any]) -> InputSchema | None:
    """The model's input schema as stored (it was checked when the model was created)."""
    raw = declared_schema(meta)
    if raw is None:
        return None
    try:
        return parse_schema(raw)
    except SchemaError:
        return None
