"""Users' models on disk and in the database: metadata and versions in SQLite, contents as files.

A version's content is streamed to a file of its own under `uploads/` and moved in place only once it is whole,
within the size limit and checked; whatever fails leaves no file and the version as it was (`pending`).
Files are readable by the service's user only, and the sandboxed model workers never get a path: the service
reads the content and hands the worker the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wml_server.db import Database, now_iso

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    instance_id TEXT NOT NULL REFERENCES instances(id), meta TEXT NOT NULL,
    framework TEXT NOT NULL, framework_version TEXT NOT NULL, created_at TEXT NOT NULL, modified_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS models_by_instance ON models (instance_id, seq);
CREATE TABLE IF NOT EXISTS model_versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    state TEXT NOT NULL, format TEXT, size INTEGER, sha256 TEXT, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS versions_by_model ON model_versions (model_id, seq);
"""
PENDING, PERSISTED = "pending", "persisted"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class VersionRecord:
    id: str
    model_id: str
    state: str  # PENDING until its content is stored, then PERSISTED
    format: str | None
    size: int | None
    sha256: str | None
    created_at: str


@dataclass(frozen=True)
class ModelRecord:
    id: str
    instance_id: str
    meta: dict[str, Any]  # the create request as validated (name, description, framework, schema, ...)
    framework: str
    framework_version: str
    created_at: str
    modified_at: str
    latest: VersionRecord | None  # the newest version with content

    @property
    def name(self) -> str:
        return str(self.meta.get("name", ""))


class ContentTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"over {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class Upload:
    """A content streamed to a temporary file, not yet anyone's: `ModelStore.commit` or `.discard` it."""

    path: Path
    size: int
    sha256: str


class ModelStore:
    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = root
        self.uploads = root / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
        root.chmod(0o700)
        db.executescript(_SCHEMA)
        for stale in self.uploads.iterdir():  # uploads a killed process left half-written
            with contextlib.suppress(OSError):
                stale.unlink()

    # -- models ---------------------------------------------------------------------------------------------

    def create(self, instance_id: str, meta: dict[str, Any], framework: str, version: str) -> ModelRecord:
        model_id, now = str(uuid.uuid4()), now_iso()
        self.db.transaction([
            ("INSERT INTO models (id, instance_id, meta, framework, framework_version, created_at, modified_at) "
             "VALUES (?, ?, ?, ?, ?, ?, ?)", (model_id, instance_id, json.dumps(meta), framework, version, now, now)),
            ("INSERT INTO model_versions (id, model_id, state, created_at) VALUES (?, ?, ?, ?)",
             (str(uuid.uuid4()), model_id, PENDING, now))])
        model = self.model(instance_id, model_id)
        assert model is not None
        return model

    def model(self, instance_id: str, model_id: str) -> ModelRecord | None:
        row = self.db.one("SELECT * FROM models WHERE instance_id = ? AND id = ?", instance_id, model_id)
        return self._model(row) if row else None

    def first_pending(self, model_id: str) -> VersionRecord | None:
        """The newest version still waiting for its content (the one a model is created with, at first)."""
        row = self.db.one("SELECT * FROM model_versions WHERE model_id = ? AND state = ? ORDER BY seq DESC LIMIT 1",
                          model_id, PENDING)
        return _version(row) if row else None

    def models(self, instance_id: str, *, with_content: bool = False) -> list[ModelRecord]:
        rows = self.db.all("SELECT * FROM models WHERE instance_id = ? ORDER BY seq", instance_id)
        models = [self._model(r) for r in rows]
        return [m for m in models if m.latest is not None] if with_content else models

    def delete(self, instance_id: str, model_id: str) -> bool:
        versions = self.versions(model_id)
        if self.db.execute("DELETE FROM models WHERE instance_id = ? AND id = ?", instance_id, model_id) == 0:
            return False
        self.db.execute("DELETE FROM model_versions WHERE model_id = ?", model_id)
        for version in versions:
            with contextlib.suppress(FileNotFoundError):
                self.content_path(model_id, version.id).unlink()
        with contextlib.suppress(OSError):
            (self.root / model_id).rmdir()
        return True

    def _model(self, row: Any) -> ModelRecord:
        latest = self.db.one("SELECT * FROM model_versions WHERE model_id = ? AND state = ? ORDER BY seq DESC "
                             "LIMIT 1", row["id"], PERSISTED)
        return ModelRecord(id=row["id"], instance_id=row["instance_id"], meta=json.loads(row["meta"]),
                           framework=row["framework"], framework_version=row["framework_version"],
                           created_at=row["created_at"], modified_at=row["modified_at"],
                           latest=_version(latest) if latest else None)

    # -- versions -------------------------------------------------------------------------------------------

    def add_version(self, model_id: str) -> VersionRecord:
        version_id = str(uuid.uuid4())
        self.db.execute("INSERT INTO model_versions (id, model_id, state, created_at) VALUES (?, ?, ?, ?)",
                        version_id, model_id, PENDING, now_iso())
        version = self.version(model_id, version_id)
        assert version is not None
        return version

    def delete_version(self, model_id: str, version_id: str) -> None:
        """A pending version (no content file): the caller checked."""
        self.db.execute("DELETE FROM model_versions WHERE model_id = ? AND id = ? AND state = ?", model_id,
                        version_id, PENDING)

    def version(self, model_id: str, version_id: str) -> VersionRecord | None:
        row = self.db.one("SELECT * FROM model_versions WHERE model_id = ? AND id = ?", model_id, version_id)
        return _version(row) if row else None

    def versions(self, model_id: str) -> list[VersionRecord]:
        return [_version(r) for r in self.db.all("SELECT * FROM model_versions WHERE model_id = ? ORDER BY seq",
                                                 model_id)]

    def content_path(self, model_id: str, version_id: str) -> Path:
        return self.root / model_id / version_id

    def read(self, model_id: str, version_id: str) -> bytes:
        return self.content_path(model_id, version_id).read_bytes()

    # -- content --------------------------------------------------------------------------------------------

    async def receive(self, chunks: AsyncIterator[bytes], limit: int) -> Upload:
        """Streams a body to a temporary file; ContentTooLarge (and no file) past `limit` bytes."""
        path = self.uploads / uuid.uuid4().hex
        digest, size = hashlib.sha256(), 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise ContentTooLarge(limit)
                    digest.update(chunk)
                    # In a thread: a slow disk must not hold up the event loop (every other request waits on it).
                    await asyncio.to_thread(out.write, chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Upload(path, size, digest.hexdigest())

    def commit(self, model_id: str, version_id: str, upload: Upload, content_format: str) -> VersionRecord | None:
        """The upload becomes the version's content, and the version the model's latest; None when the model
        was deleted meanwhile (nothing is kept then)."""
        target = self.content_path(model_id, version_id)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(upload.path, target)
        try:
            self.db.transaction([
                ("UPDATE model_versions SET state = ?, format = ?, size = ?, sha256 = ? WHERE id = ?",
                 (PERSISTED, content_format, upload.size, upload.sha256, version_id)),
                ("UPDATE models SET modified_at = ? WHERE id = ?", (now_iso(), model_id))])
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        version = self.version(model_id, version_id)
        if version is None or version.state != PERSISTED:
            target.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                target.parent.rmdir()
            return None
        return version

    @staticmethod
    def discard(upload: Upload) -> None:
        upload.path.unlink(missing_ok=True)


def _version(row: Any) -> VersionRecord:
    return VersionRecord(id=row["id"], model_id=row["model_id"], state=row["state"], format=row["format"],
                         size=row["size"], sha256=row["sha256"], created_at=row["created_at"])
