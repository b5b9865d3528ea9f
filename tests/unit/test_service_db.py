"""The store: a database from before the position extension gains its column; the position round-trips."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from wml_server.atrest import secure
from wml_server.db import Database, DeploymentRecord, now_iso
from wml_server.vault import Vault, new_key, write_key_file

_OLD_DEPLOYMENTS = """
CREATE TABLE instances (id TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE deployments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE, instance_id TEXT NOT NULL REFERENCES instances(id), model_id TEXT NOT NULL,
    body TEXT NOT NULL, spark TEXT, status TEXT NOT NULL, status_details TEXT, desired TEXT NOT NULL,
    created_at TEXT NOT NULL, modified_at TEXT NOT NULL);
INSERT INTO instances VALUES ('i', '2026-01-01T00:00:00Z');
INSERT INTO deployments (id, instance_id, model_id, body, status, desired, created_at, modified_at)
    VALUES ('old', 'i', 'm', '{}', 'STOPPED', 'STOPPED', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');
"""


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    write_key_file(tmp_path / "keys" / "wml.key", [new_key()], replace=False)
    return Vault(tmp_path / "keys" / "wml.key")


def test_an_old_database_is_migrated_and_keeps_its_deployments(tmp_path: Path, vault: Vault) -> None:
    path = tmp_path / "wml.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(_OLD_DEPLOYMENTS)
    db = Database(path, vault)
    try:
        assert secure(db) == 1  # its plaintext body, encrypted
        record = db.deployment("i", "old")
        assert record is not None
        assert record.position is None
        assert db.set_status("old", "STOPPED", None, {"topic": "t", "offsets": {"0": 3}})
        again = db.deployment("i", "old")
        assert again is not None
        assert again.position == {"topic": "t", "offsets": {"0": 3}}
        assert db.set_status("old", "RUNNING", None)  # without a position: the stored one stays
        kept = db.deployment("i", "old")
        assert kept is not None
        assert kept.position == {"topic": "t", "offsets": {"0": 3}}
    finally:
        db.close()
    Database(path).close()  # opening a migrated database again changes nothing


def test_a_new_deployment_has_no_position(tmp_path: Path, vault: Vault) -> None:
    db = Database(tmp_path / "wml.sqlite3", vault)
    try:
        db.upsert_user("u", "hash", "i")
        now = now_iso()
        db.insert_deployment(DeploymentRecord("d", "i", "m", {}, None, "STOPPED", None, "STOPPED", now, now))
        record = db.deployment("i", "d")
        assert record is not None
        assert record.position is None
    finally:
        db.close()
