"""Credentials at rest with the real service and Kafka (issue 21): a key rotated under a running stream, a
database from before encryption migrated on start with its stream resuming, a wrong key refusing the start; the
token signing key kept encrypted, taken over from an older plaintext signing.key, rotated."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from confluent_kafka import Consumer, Producer

from tests.conftest import Figures, plaintext_in_data_folders, signing_key_of
from tests.integration.test_wml_service_streams import _deploy, _wait_status
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_localplatform import KafkaInfo
from wml_localplatform.process import StartFailed
from wml_localplatform.wmlservice import WMLService
from wml_server.vault import PREFIX, Vault, read_key_lines


def produce(kafka: KafkaInfo, topic: str, keys: range) -> None:
    producer = Producer(kafka.client_config())
    for i in keys:
        producer.produce(topic, json.dumps({"text": f"a good day {i}"}).encode(), str(i).encode())
    assert producer.flush(30) == 0


def scored_keys(kafka: KafkaInfo, topic: str, wanted: int, timeout: float = 90) -> set[bytes]:
    consumer = Consumer(kafka.client_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                                               "isolation.level": "read_committed"}))
    consumer.subscribe([topic])
    seen: set[bytes] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < wanted and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                seen.add(msg.key())
    finally:
        consumer.close()
    return seen


def cli(service: WMLService, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "wml_server", *args, "--key-file", str(service.key_file),
                             "--data-dir", str(service.data_dir)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def stored(service: WMLService) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{service.data_dir / 'wml.sqlite3'}?mode=ro", uri=True) as conn:
        return list(conn.execute("SELECT body, spark FROM deployments ORDER BY seq"))


def secrets_of(kafka: KafkaInfo) -> set[str]:
    return {user.password for user in kafka.users}


def scoring_stream(make_wml_service: Callable[..., WMLService], kafka: KafkaInfo, kafka_topic: Callable[..., str]
                   ) -> tuple[WMLService, WMLClient, str, str, str]:
    """A service of its own with a RUNNING deployment that has scored records 0-9."""
    service = make_wml_service()
    user = service.add_user()
    api = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)
    source, target = kafka_topic("in"), kafka_topic("out")
    did = _deploy(api, kafka, source, target)
    _wait_status(api, did, "RUNNING")
    produce(kafka, source, range(0, 10))
    assert len(scored_keys(kafka, target, 10)) == 10
    return service, api, source, target, did


def test_rotate_key_under_a_running_stream(make_wml_service: Callable[..., WMLService], kafka: KafkaInfo,
                                           kafka_topic: Callable[..., str], tmp_path: Path,
                                           figures: Figures) -> None:
    service, api, source, target, did = scoring_stream(make_wml_service, kafka, kafka_topic)
    old_key = read_key_lines(service.key_file)[0]

    started = time.monotonic()
    # The body and Spark credentials, and the token signing key.
    assert "re-encrypted 3 stored credential(s)" in cli(service, "rotate-key")
    rotate_seconds = time.monotonic() - started
    new_key = read_key_lines(service.key_file)[0]
    assert new_key != old_key
    produce(kafka, source, range(10, 20))
    assert len(scored_keys(kafka, target, 20)) == 20  # the stream never stopped
    assert api.get_instance_deployment(did).status == "RUNNING"
    # A deployment created after the rotation is encrypted under the new key by the running service.
    source2, target2 = kafka_topic("in"), kafka_topic("out")
    did2 = _deploy(api, kafka, source2, target2)
    _wait_status(api, did2, "RUNNING")
    new_only = tmp_path / "new.key"
    new_only.write_text(new_key + "\n")
    for body, spark in stored(service):
        assert body.startswith(PREFIX)
        assert Vault(new_only).decrypt(body)
        assert Vault(new_only).decrypt(spark)

    assert "kept only the first key" in cli(service, "rotate-key", "--drop-old")
    assert read_key_lines(service.key_file) == [new_key]
    service.stop()
    service.start()  # with the new key alone: both streams resume
    _wait_status(api, did, "RUNNING")
    _wait_status(api, did2, "RUNNING")
    produce(kafka, source, range(20, 30))
    assert len(scored_keys(kafka, target, 30)) == 30
    for deployment in (did, did2):
        api.delete_instance_deployment(deployment)
    service.stop()
    found, files, _ = plaintext_in_data_folders([service.data_dir], secrets_of(kafka))
    assert found == []
    figures.add("at_rest", case="rotate-key under a RUNNING stream, then --drop-old and a restart",
                result="30 of 30 records scored (10 before, 10 after the rotation, 10 after the restart)",
                detail=f"rotate-key took {rotate_seconds:.1f} s; a deployment created after it was under the new key; "
                       f"{len(found)} plaintext credentials in {files} files of the data folder")


def test_a_database_from_before_encryption_is_migrated_and_its_stream_resumes(
        make_wml_service: Callable[..., WMLService], kafka: KafkaInfo, kafka_topic: Callable[..., str],
        figures: Figures) -> None:
    service, api, source, target, did = scoring_stream(make_wml_service, kafka, kafka_topic)
    service.stop()
    # The rows as the service wrote them before encryption (plaintext JSON, no key check), freed space kept.
    vault = Vault(service.key_file)
    with sqlite3.connect(service.data_dir / "wml.sqlite3") as conn:
        conn.execute("PRAGMA secure_delete=OFF")
        rows = list(conn.execute("SELECT id, body, spark FROM deployments"))
        for deployment_id, body, spark in rows:
            conn.execute("UPDATE deployments SET body = ?, spark = ? WHERE id = ?",
                         (vault.decrypt(body), vault.decrypt(spark), deployment_id))
        conn.execute("DROP TABLE key_check")
    conn.close()
    before = plaintext_in_data_folders([service.data_dir], secrets_of(kafka))[0]
    assert before  # the old form holds them: the scanner sees them

    service.start()
    _wait_status(api, did, "RUNNING")  # resumed from the migrated row
    produce(kafka, source, range(10, 20))
    assert len(scored_keys(kafka, target, 20)) == 20
    assert all(body.startswith(PREFIX) and spark.startswith(PREFIX) for body, spark in stored(service))
    assert plaintext_in_data_folders([service.data_dir], secrets_of(kafka))[0] == []  # while it runs (WAL)
    api.delete_instance_deployment(did)
    service.stop()
    found, files, _ = plaintext_in_data_folders([service.data_dir], secrets_of(kafka))
    assert found == []
    figures.add("at_rest", case="a database from before encryption (plaintext rows), started with a key",
                result="rows encrypted on start; its stream resumed, 20 of 20 records scored",
                detail=f"(file, Kafka password) pairs found in plaintext: {len(before)} before, 0 while it ran "
                       f"(the WAL included), {len(found)} after the stop ({files} files read raw)")


def test_a_wrong_key_refuses_the_start_and_changes_nothing(make_wml_service: Callable[..., WMLService],
                                                           kafka: KafkaInfo, kafka_topic: Callable[..., str],
                                                           tmp_path: Path, figures: Figures) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false")
    user = service.add_user()
    api = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)
    did = _deploy(api, kafka, kafka_topic("in"), kafka_topic("out"))
    service.stop()
    before = {p.name: p.read_bytes() for p in service.data_dir.glob("wml.sqlite3*")}
    right = service.key_file.read_bytes()
    other = tmp_path / "other.key"
    cli_result = subprocess.run([sys.executable, "-m", "wml_server", "generate-key", "--key-file", str(other)],
                                capture_output=True, text=True, timeout=60, check=False)
    assert cli_result.returncode == 0
    service.key_file.write_bytes(other.read_bytes())
    with pytest.raises(StartFailed) as refused:
        service.start()
    assert "exited with code 2" in str(refused.value)
    assert "do not decrypt the credentials" in str(refused.value)
    assert "WML_SERVER_KEY_FILE" in str(refused.value)
    assert {p.name: p.read_bytes() for p in service.data_dir.glob("wml.sqlite3*")} == before
    assert not (service.data_dir / "signing.key").exists()  # nor was a signing key made beside it
    service.key_file.write_bytes(right)
    service.start()
    assert api.get_instance_deployment(did).id == did
    api.delete_instance_deployment(did)
    figures.add("at_rest", case="start with another key file",
                result="refused, exit 2, naming --key-file (WML_SERVER_KEY_FILE)",
                detail=f"{len(before)} database file(s) byte for byte unchanged; the right key then started it")


def test_the_signing_key_is_taken_over_from_plaintext_once_and_rotated(
        make_wml_service: Callable[..., WMLService], figures: Figures) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false")
    user = service.add_user()
    data = service.data_dir

    def instance(token: str) -> int:
        return requests.get(f"{service.url}/v3/wml_instances/{user.instance_id}",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

    key = signing_key_of(data, service.key_file)
    assert key is not None
    assert not (data / "signing.key").exists()
    # The folder as a service from before kept it: the same key in plaintext in signing.key, none in the database.
    service.stop()
    with sqlite3.connect(data / "wml.sqlite3") as conn:
        conn.execute("DELETE FROM signing_key")
    conn.close()
    (data / "signing.key").write_text(key + "\n")
    (data / "signing.key").chmod(0o600)
    assert plaintext_in_data_folders([data], {key})[0]  # the scanner sees the old form
    service.start()
    assert not (data / "signing.key").exists()
    token = requests.get(f"{service.url}/v3/identity/token", auth=(user.username, user.password),
                         timeout=10).json()["token"]
    assert instance(token) == 200
    assert signing_key_of(data, service.key_file) == key  # the same key: tokens of the older service stay valid

    assert "re-encrypted 1 stored credential(s)" in cli(service, "rotate-key")  # beside the running service
    assert "kept only the first key" in cli(service, "rotate-key", "--drop-old")
    assert instance(token) == 200
    service.stop()
    service.start()  # with the new key alone
    assert instance(token) == 200  # a token issued before the rotation still verifies
    assert signing_key_of(data, service.key_file) == key
    service.stop()
    found, files, _ = plaintext_in_data_folders([data], {key})
    assert found == []
    figures.add("at_rest", case="token signing key: a plaintext signing.key of an older service, then rotate-key "
                                "--drop-old and a restart",
                result="taken over on start (file removed), stored encrypted; a token issued before still verified",
                detail=f"{len(found)} plaintext copies of the signing key in {files} files of the data folder")
