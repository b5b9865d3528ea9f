"""What the repository API does: the rules of publishing a model, between the routes and the store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from wml_api.repository import ModelAssetCreate
from wml_server.db import Database
from wml_server.errors import APIError
from wml_server.repository.frameworks import DEPLOYABLE, PICKLED, ContentError, content_format, framework_of
from wml_server.repository.schema import SchemaError, declared_schema, parse_schema
from wml_server.repository.store import PENDING, ContentTooLarge, ModelRecord, ModelStore, VersionRecord

# Loads a version's content in a sandboxed worker: raises ContentError when it does not load.
LoadCheck = Callable[[str, bytes, list[str]], None]


@dataclass(frozen=True)
class RepositoryRules:
    allow_pickled: bool = True  # WML_SERVER_PICKLED_MODELS
    max_content_bytes: int = 512 << 20  # WML_SERVER_MODEL_MAX_BYTES


class RepositoryService:
    def __init__(self, db: Database, store: ModelStore, rules: RepositoryRules, load_check: LoadCheck | None) -> None:
        self.db = db
        self.store = store
        self.rules = rules
        self.load_check = load_check
        self._uploading: set[str] = set()  # versions whose content is being received
        self._lock = threading.Lock()

    def create(self, instance_id: str, body: ModelAssetCreate) -> ModelRecord:
        try:
            kind = framework_of(body.framework.name, body.framework.version)
        except ContentError as exc:
            raise APIError(400, exc.code, exc.message) from None
        meta = body.model_dump(mode="json", exclude_none=True)
        declared = declared_schema(meta)
        if declared is not None:
            try:
                parse_schema(declared)
            except SchemaError as exc:
                raise APIError(400, "invalid_input_schema", f"The input schema does not parse: {exc}") from None
        meta["framework"] = {**meta["framework"], "name": kind.framework, "version": kind.version}
        # The first version comes with the model: the v3 client uploads its content to it next.
        return self.store.create(instance_id, meta, kind.framework, kind.version)

    def model(self, instance_id: str, model_id: str) -> ModelRecord:
        record = self.store.model(instance_id, model_id)
        if record is None:
            raise APIError(404, "not_found", f"Model {model_id} does not exist.")
        return record

    def delete(self, instance_id: str, model_id: str) -> None:
        self.model(instance_id, model_id)
        deployments = self.db.deployments(instance_id, model_id=model_id)
        if deployments:
            raise APIError(400, "model_has_deployments",
                           f"Model {model_id} has {len(deployments)} deployment(s): delete them first "
                           f"(e.g. {deployments[0].id}).")
        self.store.delete(instance_id, model_id)

    def add_version(self, instance_id: str, model_id: str) -> VersionRecord:
        return self.store.add_version(self.model(instance_id, model_id).id)

    def version(self, instance_id: str, model_id: str, version_id: str) -> VersionRecord:
        self.model(instance_id, model_id)
        version = self.store.version(model_id, version_id)
        if version is None:
            raise APIError(404, "not_found", f"Version {version_id} of model {model_id} does not exist.")
        return version

    def delete_pending_version(self, instance_id: str, model_id: str, version_id: str) -> None:
        """Only a version without content goes: a stored one may run in a deployment, and versions are kept."""
        version = self.version(instance_id, model_id, version_id)
        with self._lock:
            if version.state != PENDING or version_id in self._uploading:
                raise APIError(409, "version_has_content",
                               f"Version {version_id} has its content (or is receiving it); only a pending version "
                               "can be deleted.")
            self.store.delete_version(model_id, version_id)

    async def upload(self, instance_id: str, model_id: str, version_id: str, chunks: AsyncIterator[bytes],
                     length: int | None) -> VersionRecord:
        """Streams the content to disk within the size limit, checks it, and only then stores it."""
        record = self.model(instance_id, model_id)
        version = self.version(instance_id, model_id, version_id)
        if version.state != PENDING:
            raise APIError(409, "content_exists",
                           f"Version {version_id} has its content already; create a new version to change it.")
        limit = self.rules.max_content_bytes
        if length is not None and length > limit:
            raise APIError(413, "model_content_too_large", f"Model content is limited to {limit} bytes.")
        with self._lock:
            if version_id in self._uploading:
                raise APIError(409, "upload_in_progress", f"Version {version_id}'s content is being uploaded.")
            self._uploading.add(version_id)
        try:
            try:
                upload = await self.store.receive(chunks, limit)
            except ContentTooLarge:
                raise APIError(413, "model_content_too_large",
                               f"Model content is limited to {limit} bytes.") from None
            try:
                fmt = await asyncio.to_thread(self._check, record, upload.path)
                stored = self.store.commit(model_id, version_id, upload, fmt)
            finally:
                self.store.discard(upload)  # gone already when committed
        finally:
            with self._lock:
                self._uploading.discard(version_id)
        if stored is None:
            raise APIError(404, "not_found", f"Model {model_id} was deleted while its content was uploaded.")
        return stored

    def _check(self, record: ModelRecord, path: Path) -> str:
        try:
            kind = framework_of(record.framework, record.framework_version)
            fmt = content_format(kind, path)
            if fmt in PICKLED and not self.rules.allow_pickled:
                raise ContentError("pickled_models_disabled",
                                   "This service does not take pickled models (WML_SERVER_PICKLED_MODELS=false): "
                                   "publish the model in skops's format (skops.io.dump).")
            if fmt in DEPLOYABLE and self.load_check is not None:
                schema = declared_schema(record.meta)
                fields = parse_schema(schema).names if schema is not None else []
                self.load_check(fmt, path.read_bytes(), fields)
        except ContentError as exc:
            raise APIError(400, exc.code, exc.message) from None
        return fmt
