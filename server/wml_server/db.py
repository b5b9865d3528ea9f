"""SQLite persistence: users, instances and deployments survive a restart of the service.

Deployments keep their create request whole, credentials included, because a RUNNING stream must resume
after a restart; the database file is therefore created readable by its owner only, and the request and the
Spark credentials are stored encrypted by the service's key (vault.py; migration and rotation in atrest.py), as is
the key that signs tokens (table signing_key).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wml_server.vault import Vault

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY, password_hash TEXT NOT NULL,
    instance_id TEXT NOT NULL REFERENCES instances(id), created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deployments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE, instance_id TEXT NOT NULL REFERENCES instances(id), model_id TEXT NOT NULL,
    body TEXT NOT NULL, spark TEXT, status TEXT NOT NULL, status_details TEXT, desired TEXT NOT NULL,
    created_at TEXT NOT NULL, modified_at TEXT NOT NULL, position TEXT, model_version TEXT);
CREATE INDEX IF NOT EXISTS deployments_by_instance ON deployments (instance_id, seq);
CREATE TABLE IF NOT EXISTS key_check (id INTEGER PRIMARY KEY CHECK (id = 1), token TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cleanups (
    id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, model_id TEXT NOT NULL, model_version TEXT,
    body TEXT NOT NULL, on_spark INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS signing_key (id INTEGER PRIMARY KEY CHECK (id = 1), token TEXT NOT NULL);
"""
# The columns that hold credentials, by table: a deployment's create request (Kafka connections) and Spark
# credentials; the create request a deleted deployment's cleanup still needs (cleanups, below); the key that signs
# tokens (atrest.signing_key).
SECRET_COLUMNS = {"deployments": ("body", "spark"), "cleanups": ("body",), "signing_key": ("token",)}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class DeploymentRecord:
    id: str
    instance_id: str
    model_id: str
    body: dict[str, Any]
    spark: dict[str, Any] | None
    status: str
    status_details: dict[str, Any] | None
    desired: str  # RUNNING or STOPPED: what the user last asked for; resumed after a restart
    created_at: str
    modified_at: str
    # Extension EXT_POSITION: {"topic", "offsets": {"0": next offset}}, as the stream last stopped cleanly.
    position: dict[str, Any] | None = None
    # The version of a user's model it runs (None for the built-in models, which have one version).
    model_version: str | None = None


@dataclass(frozen=True)
class CleanupRecord:
    """What a deleted deployment left on the brokers (its consumer group, an open transaction) and that is not
    taken away yet: written in the transaction that deletes the deployment, removed once its cleanup has
    finished, so a service killed in between finishes it after its restart."""

    id: str
    instance_id: str
    model_id: str
    model_version: str | None
    body: dict[str, Any]
    on_spark: bool
    created_at: str


@dataclass(frozen=True)
class UserRecord:
    username: str
    password_hash: str
    instance_id: str


class Database:
    """`vault` encrypts and decrypts the deployments' credentials; the user commands (add-user, ...) open the
    database without one and never read a deployment."""

    def __init__(self, path: Path, vault: Vault | None = None) -> None:
        self.path = path
        self.vault = vault
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        if new:
            path.chmod(0o600)
        self._lock = threading.Lock()
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            # Freed pages and cells are zeroed, not left holding what a deleted or rewritten row held; temporary
            # tables (VACUUM's copy) stay in memory, never in a file outside the data folder.
            self._conn.execute("PRAGMA secure_delete=ON")
            self._conn.execute("PRAGMA temp_store=MEMORY")
            self._conn.executescript(_SCHEMA)
            columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(deployments)")}
            if "position" not in columns:  # a database of a service from before the position extension
                self._conn.execute("ALTER TABLE deployments ADD COLUMN position TEXT")
            if "model_version" not in columns:  # ... from before users' models
                self._conn.execute("ALTER TABLE deployments ADD COLUMN model_version TEXT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def seal(self, plaintext: str) -> str:
        if self.vault is None:
            raise RuntimeError("this database was opened without the service's key")
        return self.vault.encrypt(plaintext)

    def unseal(self, stored: str) -> str:
        if self.vault is None:
            raise RuntimeError("this database was opened without the service's key")
        return self.vault.decrypt(stored)

    def checkpoint(self) -> None:
        """Moves the WAL into the database file and truncates it: no page image (a plaintext row before the
        migration, a row under a dropped key) stays behind in wml.sqlite3-wal. Retried while a reader of the
        service (a rotation runs beside it) holds an older snapshot."""
        for _ in range(50):
            with self._lock:
                busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy:
                return
            threading.Event().wait(0.1)
        raise RuntimeError(f"the WAL of {self.path} could not be checkpointed: another connection keeps reading")

    def vacuum(self) -> None:
        """Rebuilds the file: free space a database from before secure_delete kept (deleted rows) is gone."""
        with self._lock:
            self._conn.execute("VACUUM")

    def executescript(self, sql: str) -> None:
        """Schema of a part of the service that keeps its own tables (the model repository)."""
        with self._lock:
            self._conn.executescript(sql)

    def transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Runs every statement or none."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                for sql, args in statements:
                    self._conn.execute(sql, args)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        return self._one(sql, *args)

    def all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return self._all(sql, *args)

    def execute(self, sql: str, *args: Any) -> int:
        return self._exec(sql, *args)

    def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, args).fetchone()
            return row

    def _all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, args).fetchall())

    def _exec(self, sql: str, *args: Any) -> int:
        with self._lock:
            return self._conn.execute(sql, args).rowcount

    # Users and instances
    def upsert_user(self, username: str, password_hash: str, instance_id: str) -> None:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.execute("INSERT OR IGNORE INTO instances (id, created_at) VALUES (?, ?)",
                                   (instance_id, now_iso()))
                self._conn.execute(
                    "INSERT INTO users (username, password_hash, instance_id, created_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(username) DO UPDATE SET password_hash=excluded.password_hash, "
                    "instance_id=excluded.instance_id", (username, password_hash, instance_id, now_iso()))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def delete_user(self, username: str) -> bool:
        return self._exec("DELETE FROM users WHERE username = ?", username) > 0

    def user(self, username: str) -> UserRecord | None:
        row = self._one("SELECT username, password_hash, instance_id FROM users WHERE username = ?", username)
        return UserRecord(row["username"], row["password_hash"], row["instance_id"]) if row else None

    def users(self) -> list[UserRecord]:
        rows = self._all("SELECT username, password_hash, instance_id FROM users ORDER BY username")
        return [UserRecord(r["username"], r["password_hash"], r["instance_id"]) for r in rows]

    def instance_created_at(self, instance_id: str) -> str | None:
        row = self._one("SELECT created_at FROM instances WHERE id = ?", instance_id)
        return str(row["created_at"]) if row else None

    # Deployments
    def insert_deployment(self, record: DeploymentRecord) -> None:
        self._exec(
            "INSERT INTO deployments (id, instance_id, model_id, body, spark, status, status_details, desired, "
            "created_at, modified_at, model_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            record.id, record.instance_id, record.model_id, self.seal(json.dumps(record.body)),
            self.seal(json.dumps(record.spark)) if record.spark is not None else None, record.status,
            json.dumps(record.status_details) if record.status_details else None, record.desired,
            record.created_at, record.modified_at, record.model_version)

    def count_deployments(self, instance_id: str) -> int:
        row = self._one("SELECT COUNT(*) AS n FROM deployments WHERE instance_id = ?", instance_id)
        return int(row["n"]) if row else 0

    def deployment_by_id(self, deployment_id: str) -> DeploymentRecord | None:
        row = self._one("SELECT * FROM deployments WHERE id = ?", deployment_id)
        return self._record(row) if row else None

    def deployment(self, instance_id: str, deployment_id: str) -> DeploymentRecord | None:
        row = self._one("SELECT * FROM deployments WHERE instance_id = ? AND id = ?", instance_id, deployment_id)
        return self._record(row) if row else None

    def deployments(self, instance_id: str, *, model_id: str | None = None, status: str | None = None,
                    start: int = 0, limit: int | None = None) -> list[DeploymentRecord]:
        sql, args = "SELECT * FROM deployments WHERE instance_id = ?", [instance_id]
        if model_id is not None:
            sql, args = sql + " AND model_id = ?", [*args, model_id]
        if status is not None:
            sql, args = sql + " AND status = ?", [*args, status]
        sql += " ORDER BY seq LIMIT ? OFFSET ?"
        return [self._record(r) for r in self._all(sql, *args, -1 if limit is None else limit, start)]

    def all_deployments(self) -> list[DeploymentRecord]:
        return [self._record(r) for r in self._all("SELECT * FROM deployments ORDER BY seq")]

    def set_status(self, deployment_id: str, status: str, details: dict[str, Any] | None,
                   position: dict[str, Any] | None = None) -> bool:
        """`position`, when given, is stored in the same update: whoever reads the status reads it too."""
        if position is not None:
            return self._exec(
                "UPDATE deployments SET status = ?, status_details = ?, position = ?, modified_at = ? WHERE id = ?",
                status, json.dumps(details) if details else None, json.dumps(position), now_iso(),
                deployment_id) > 0
        return self._exec("UPDATE deployments SET status = ?, status_details = ?, modified_at = ? WHERE id = ?",
                          status, json.dumps(details) if details else None, now_iso(), deployment_id) > 0

    def set_desired(self, deployment_id: str, desired: str) -> None:
        self._exec("UPDATE deployments SET desired = ?, modified_at = ? WHERE id = ?", desired, now_iso(),
                   deployment_id)

    def delete_deployment(self, instance_id: str, deployment_id: str, *, cleanup_on_spark: bool | None = None
                          ) -> bool:
        """`cleanup_on_spark` not None: the deployment left something on the brokers; a cleanup row (its create
        request as stored, still encrypted) takes its place in the same transaction."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                if cleanup_on_spark is not None:
                    self._conn.execute(
                        "INSERT OR REPLACE INTO cleanups (id, instance_id, model_id, model_version, body, on_spark, "
                        "created_at) SELECT id, instance_id, model_id, model_version, body, ?, ? FROM deployments "
                        "WHERE instance_id = ? AND id = ?", (int(cleanup_on_spark), now_iso(), instance_id,
                                                             deployment_id))
                deleted = self._conn.execute("DELETE FROM deployments WHERE instance_id = ? AND id = ?",
                                             (instance_id, deployment_id)).rowcount > 0
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return deleted

    def cleanups(self) -> list[CleanupRecord]:
        return [CleanupRecord(id=r["id"], instance_id=r["instance_id"], model_id=r["model_id"],
                              model_version=r["model_version"], body=json.loads(self.unseal(r["body"])),
                              on_spark=bool(r["on_spark"]), created_at=r["created_at"])
                for r in self._all("SELECT * FROM cleanups ORDER BY created_at")]

    def cleanup_done(self, deployment_id: str) -> None:
        self._exec("DELETE FROM cleanups WHERE id = ?", deployment_id)

    def _record(self, row: sqlite3.Row) -> DeploymentRecord:
        return DeploymentRecord(
            id=row["id"], instance_id=row["instance_id"], model_id=row["model_id"],
            body=json.loads(self.unseal(row["body"])),
            spark=json.loads(self.unseal(row["spark"])) if row["spark"] else None, status=row["status"],
            status_details=json.loads(row["status_details"]) if row["status_details"] else None,
            desired=row["desired"], created_at=row["created_at"], modified_at=row["modified_at"],
            position=json.loads(row["position"]) if row["position"] else None, model_version=row["model_version"])
