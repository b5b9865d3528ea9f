"""Credentials at rest (issue 21): encrypted by a key file kept apart from the data folder; a plaintext database
migrated once; a wrong or missing key refuses the start and changes nothing; rotation beside a running service."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from tests.conftest import plaintext_in_data_folders
from wml_server.__main__ import main
from wml_server.app import open_database
from wml_server.atrest import rotate
from wml_server.db import Database, DeploymentRecord, now_iso
from wml_server.settings import Settings
from wml_server.vault import PREFIX, KeyFileError, Vault, read_key_lines

KAFKA_PASSWORD = "kafka-at-rest-3f9c1e"
SPARK_SECRET = "spark-at-rest-8d2b7a"


def record(deployment_id: str) -> DeploymentRecord:
    now = now_iso()
    conn = {"kafka_brokers_sasl": ["127.0.0.1:9"], "user": "u", "password": KAFKA_PASSWORD}
    body = {"type": "stream", "input": {"connection": conn, "source": {"topic": "a"}},
            "output": {"connection": conn, "target": {"topic": "b"}}}
    spark = {"credentials": {"tenant_secret": SPARK_SECRET, "cluster_master_url": "local"}, "version": "2.0"}
    return DeploymentRecord(deployment_id, "i", "m", body, spark, "STOPPED", None, "STOPPED", now, now)


def settings(tmp_path: Path, key_file: Path | None) -> Settings:
    return Settings(data_dir=tmp_path / "data", key_file=key_file, scoring_workers=0)


def started(tmp_path: Path, key_file: Path) -> Database:
    """The database as a started service opens it, with the instance deployments belong to."""
    db = open_database(settings(tmp_path, key_file))
    db.upsert_user("u", "hash", "i")
    return db


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "wml.key"
    assert main(["generate-key", "--key-file", str(path)]) == 0
    return path


def plaintext_database(tmp_path: Path) -> Path:
    """A database as the service wrote it before encryption: credentials in plaintext JSON, a deleted
    deployment's plaintext left in free space (no secure_delete then)."""
    path = tmp_path / "data" / "wml.sqlite3"
    legacy = Database(path)  # the schema as every version creates it
    legacy.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA secure_delete=OFF")
    conn.execute("INSERT INTO instances VALUES ('i', '2026-01-01T00:00:00Z')")
    for deployment_id in ("kept", "deleted"):
        r = record(deployment_id)
        conn.execute("INSERT INTO deployments (id, instance_id, model_id, body, spark, status, desired, created_at, "
                     "modified_at) VALUES (?, 'i', 'm', ?, ?, 'STOPPED', 'STOPPED', ?, ?)",
                     (r.id, json.dumps(r.body), json.dumps(r.spark), r.created_at, r.modified_at))
    conn.commit()
    conn.execute("DELETE FROM deployments WHERE id = 'deleted'")
    conn.commit()
    conn.close()
    return path


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generate_key_writes_a_0600_file_and_never_overwrites_one(key_file: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(read_key_lines(key_file)) == 1
    before = key_file.read_bytes()
    assert main(["generate-key", "--key-file", str(key_file)]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert key_file.read_bytes() == before


def test_credentials_are_stored_encrypted_and_read_back(tmp_path: Path, key_file: Path) -> None:
    db = started(tmp_path, key_file)
    try:
        db.insert_deployment(record("d"))
        raw = db.one("SELECT body, spark FROM deployments WHERE id = 'd'")
        assert raw is not None
        assert raw["body"].startswith(PREFIX)
        assert raw["spark"].startswith(PREFIX)
        read = db.deployment("i", "d")
        assert read is not None
        assert (read.body, read.spark) == (record("d").body, record("d").spark)
    finally:
        db.close()
    found, files, _ = plaintext_in_data_folders([tmp_path / "data"], {KAFKA_PASSWORD, SPARK_SECRET})
    assert files >= 1
    assert found == []


def test_a_plaintext_database_is_migrated_once_and_no_plaintext_stays(tmp_path: Path, key_file: Path) -> None:
    path = plaintext_database(tmp_path)
    found, _, _ = plaintext_in_data_folders([path.parent], {KAFKA_PASSWORD})
    assert found  # the old form really holds it: the scanner sees it
    db = open_database(settings(tmp_path, key_file))
    try:
        kept = db.deployment("i", "kept")
        assert kept is not None
        assert kept.body["input"]["connection"]["password"] == KAFKA_PASSWORD
        assert kept.spark is not None
        assert kept.spark["credentials"]["tenant_secret"] == SPARK_SECRET
        # Still open (the WAL exists now): its files hold no plaintext either.
        assert plaintext_in_data_folders([path.parent], {KAFKA_PASSWORD, SPARK_SECRET})[0] == []
    finally:
        db.close()
    assert plaintext_in_data_folders([path.parent], {KAFKA_PASSWORD, SPARK_SECRET})[0] == []
    before = file_bytes(path.parent)
    open_database(settings(tmp_path, key_file)).close()  # once: a second start migrates nothing
    assert file_bytes(path.parent) == before


@pytest.mark.parametrize("case", ["unset", "missing file", "another key", "not a key"])
def test_a_wrong_or_missing_key_refuses_the_start_and_changes_nothing(tmp_path: Path, key_file: Path,
                                                                      case: str) -> None:
    db = started(tmp_path, key_file)
    db.insert_deployment(record("d"))
    db.close()
    other = tmp_path / "other.key"
    if case == "another key":
        assert main(["generate-key", "--key-file", str(other)]) == 0
    elif case == "not a key":
        other.write_text("not-a-fernet-key\n")
    given = {"unset": None, "missing file": tmp_path / "nowhere.key"}.get(case, other)
    before = file_bytes(tmp_path / "data")
    with pytest.raises(KeyFileError) as refused:
        open_database(settings(tmp_path, given))
    message = str(refused.value)
    assert "WML_SERVER_KEY_FILE" in message
    assert "generate-key" in message or "encrypted with" in message
    assert KAFKA_PASSWORD not in message
    for key in read_key_lines(key_file):
        assert key not in message
    assert file_bytes(tmp_path / "data") == before


def test_a_fresh_data_folder_without_a_key_is_refused_by_serve(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--data-dir", str(tmp_path / "data"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "WML_SERVER_KEY_FILE" in err
    assert "wml-server generate-key --key-file PATH" in err
    assert not (tmp_path / "data" / "wml.sqlite3").exists()


def test_rotation_re_encrypts_under_a_new_key_a_running_service_follows(tmp_path: Path, key_file: Path) -> None:
    service = started(tmp_path, key_file)  # the running service's connection and vault
    try:
        service.insert_deployment(record("before"))
        old_keys = read_key_lines(key_file)
        assert main(["rotate-key", "--key-file", str(key_file), "--data-dir", str(tmp_path / "data")]) == 0
        keys = read_key_lines(key_file)
        assert len(keys) == 2
        assert keys[1:] == old_keys
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        new_only = tmp_path / "new-only.key"
        new_only.write_text(keys[0] + "\n")
        assert Vault(new_only).decrypt(service.one("SELECT body FROM deployments")["body"])  # type: ignore[index]
        # The running service reads rows the rotation wrote, and encrypts under the new key from now on.
        again = service.deployment("i", "before")
        assert again is not None
        assert again.body["input"]["connection"]["password"] == KAFKA_PASSWORD
        service.insert_deployment(record("after"))
        assert rotate(key_file, tmp_path / "data" / "wml.sqlite3", new=False, drop_old=True) == 4  # 2 rows, 2 columns
        assert read_key_lines(key_file) == keys[:1]
        assert {r.id for r in service.all_deployments()} == {"before", "after"}
    finally:
        service.close()
    old = tmp_path / "old.key"
    old.write_text(old_keys[0] + "\n")
    with pytest.raises(KeyFileError):  # the old key alone no longer opens the database
        open_database(settings(tmp_path, old))
    open_database(settings(tmp_path, key_file)).close()
    assert plaintext_in_data_folders([tmp_path / "data"], {KAFKA_PASSWORD, SPARK_SECRET})[0] == []


def test_rotate_key_on_a_folder_without_a_database_changes_nothing(tmp_path: Path, key_file: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    before = key_file.read_bytes()
    assert main(["rotate-key", "--key-file", str(key_file), "--data-dir", str(tmp_path / "elsewhere")]) == 2
    assert "--data-dir (WML_SERVER_DATA_DIR)" in capsys.readouterr().err
    assert key_file.read_bytes() == before
    assert not (tmp_path / "elsewhere").exists()


def test_a_key_file_inside_the_data_folder_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    inside = tmp_path / "data" / "wml.key"
    assert main(["generate-key", "--key-file", str(inside)]) == 0
    with caplog.at_level("WARNING", logger="wml_server"):
        open_database(settings(tmp_path, inside)).close()
    assert "inside the data folder" in caplog.text
    assert read_key_lines(inside)[0] not in caplog.text


def test_a_value_under_a_key_not_read_yet_makes_the_vault_read_the_file_again(
        key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running = Vault(key_file)
    stamp = running._stamp
    monkeypatch.setattr(running, "_stat", lambda: stamp)  # a change its stat check would not see
    assert main(["generate-key", "--key-file", str(key_file.with_name("next.key"))]) == 0
    key_file.write_text(key_file.with_name("next.key").read_text() + key_file.read_text())
    newer = Vault(key_file).encrypt("written by rotate-key")
    assert running.decrypt(newer) == "written by rotate-key"


def test_a_deleted_deployments_cleanup_row_is_encrypted_and_rotated(tmp_path: Path, key_file: Path) -> None:
    """The create request a pending cleanup keeps (its Kafka login) is under the key like a deployment's."""
    db = started(tmp_path, key_file)
    try:
        db.insert_deployment(record("gone"))
        db.insert_deployment(record("kept"))
        assert db.delete_deployment("i", "gone", cleanup_on_spark=False)
        (cleanup,) = db.cleanups()
        assert (cleanup.id, cleanup.on_spark) == ("gone", False)
        assert cleanup.body["input"]["connection"]["password"] == KAFKA_PASSWORD
        assert {r.id for r in db.all_deployments()} == {"kept"}
        assert main(["rotate-key", "--key-file", str(key_file), "--data-dir", str(tmp_path / "data")]) == 0
        new_only = tmp_path / "new-only.key"
        new_only.write_text(read_key_lines(key_file)[0] + "\n")
        assert Vault(new_only).decrypt(db.one("SELECT body FROM cleanups")["body"])  # type: ignore[index]
        db.cleanup_done("gone")
        assert db.cleanups() == []
    finally:
        db.close()
    assert plaintext_in_data_folders([tmp_path / "data"], {KAFKA_PASSWORD, SPARK_SECRET})[0] == []
