"""The key that signs tokens at rest (issue 21): kept in the database encrypted by the key file, never as a
plaintext file in the data folder; an older service's signing.key taken over once; rotated with the rest; a
signing key file the operator of the service names is theirs and stays as it is."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from tests.conftest import plaintext_in_data_folders
from wml_server.__main__ import main
from wml_server.api.deps import AppState
from wml_server.app import create_app, open_database
from wml_server.auth import Principal, hash_password
from wml_server.settings import Settings
from wml_server.token_payload import encode_hs256
from wml_server.vault import PREFIX, KeyFileError, Vault, read_key_lines

OLD_KEY = b"an-older-service-made-this-key-in-plaintext-7c1e9a"
MakeApp = Callable[..., AppState]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "wml.key"
    assert main(["generate-key", "--key-file", str(path)]) == 0
    return path


@pytest.fixture
def start(tmp_path: Path, key_file: Path) -> Iterator[MakeApp]:
    """A service's state as create_app builds it (what a start does to the data folder), with a user."""
    apps: list[FastAPI] = []

    def make(key: Path = key_file, **settings: object) -> AppState:
        app = create_app(Settings(data_dir=tmp_path / "data", key_file=key, scoring_workers=0,
                                  run_streams=False, **settings))  # type: ignore[arg-type]
        apps.append(app)
        state: AppState = app.state.wml
        state.db.upsert_user("alice", hash_password("password-1234"), "i")
        return state

    yield make
    for app in apps:
        app.state.wml.db.close()
        app.state.wml.audit.close()


def stored_token(data: Path) -> str:
    with sqlite3.connect(f"file:{data / 'wml.sqlite3'}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT token FROM signing_key").fetchone()
    conn.close()
    return str(row[0])


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def old_token() -> str:
    """A token an older service signed with its plaintext signing.key."""
    return encode_hs256({"instanceId": "i", "userId": "alice", "iss": "wml-stream-operator/wml-server",
                         "iat": 1, "exp": 4_000_000_000}, OLD_KEY)


def test_the_service_makes_its_key_encrypted_in_the_database_and_keeps_it(tmp_path: Path, start: MakeApp) -> None:
    first = start()
    token = first.issuer.issue(Principal("alice", "i"))
    data = tmp_path / "data"
    assert not (data / "signing.key").exists()
    assert stored_token(data).startswith(PREFIX)
    key = first.issuer._key
    assert plaintext_in_data_folders([data], {key.decode()})[0] == []
    first.db.close()
    again = start()  # a restart: the same key, so the token still verifies
    assert again.issuer.verify(token) == Principal("alice", "i")


def test_an_older_plaintext_signing_key_is_taken_over_once(tmp_path: Path, key_file: Path, start: MakeApp,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    open_database(Settings(data_dir=data, key_file=key_file, scoring_workers=0)).close()  # an existing service's
    (data / "signing.key").write_bytes(OLD_KEY + b"\n")
    assert plaintext_in_data_folders([data], {OLD_KEY.decode()})[0]  # the scanner sees the old form
    with caplog.at_level(logging.INFO, logger="wml_server"):
        state = start()
    assert state.issuer.verify(old_token()) == Principal("alice", "i")  # its tokens stay valid
    assert not (data / "signing.key").exists()
    assert plaintext_in_data_folders([data], {OLD_KEY.decode()})[0] == []
    assert "now stored encrypted" in caplog.text
    assert OLD_KEY.decode() not in caplog.text
    state.db.close()
    stored = stored_token(data)
    again = start()  # once: a second start takes nothing over and rewrites nothing
    assert stored_token(data) == stored
    assert again.issuer.verify(old_token()) == Principal("alice", "i")


@pytest.mark.parametrize("same", [True, False])
def test_a_take_over_cut_short_removes_only_the_same_key(tmp_path: Path, start: MakeApp, same: bool,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "signing.key").write_bytes(OLD_KEY)
    start().db.close()
    left = OLD_KEY if same else b"someone-else's-file"
    (data / "signing.key").write_bytes(left)  # as if the service stopped between the commit and the removal
    with caplog.at_level(logging.WARNING, logger="wml_server"):
        state = start()
    assert state.issuer.verify(old_token()) == Principal("alice", "i")
    assert (data / "signing.key").exists() is not same
    assert ("not the token signing key" in caplog.text) is not same


def test_rotate_key_drop_old_re_encrypts_it_and_tokens_still_verify(tmp_path: Path, key_file: Path,
                                                                    start: MakeApp) -> None:
    data = tmp_path / "data"
    state = start()
    token = state.issuer.issue(Principal("alice", "i"))
    state.db.close()
    old_keys = read_key_lines(key_file)
    before = stored_token(data)
    assert main(["rotate-key", "--key-file", str(key_file), "--data-dir", str(data)]) == 0
    assert main(["rotate-key", "--drop-old", "--key-file", str(key_file), "--data-dir", str(data)]) == 0
    assert read_key_lines(key_file) != old_keys
    assert stored_token(data) != before
    assert Vault(key_file).decrypt(stored_token(data))  # under the new key alone
    assert start().issuer.verify(token) == Principal("alice", "i")
    old_only = tmp_path / "old.key"
    old_only.write_text(old_keys[0] + "\n")
    with pytest.raises(KeyFileError):
        Vault(old_only).decrypt(stored_token(data))


def test_a_wrong_key_refuses_the_start_and_leaves_the_signing_key_alone(tmp_path: Path, start: MakeApp) -> None:
    data = tmp_path / "data"
    start().db.close()
    with sqlite3.connect(data / "wml.sqlite3") as conn:  # no deployment, no check value: the signing key alone
        conn.execute("DELETE FROM key_check")
    conn.close()
    other = tmp_path / "other.key"
    assert main(["generate-key", "--key-file", str(other)]) == 0
    before = files(data)
    with pytest.raises(KeyFileError, match="WML_SERVER_KEY_FILE"):
        start(key=other)
    assert files(data) == before


def test_a_signing_key_file_named_by_the_operator_is_used_as_it_is(tmp_path: Path, start: MakeApp) -> None:
    mine = tmp_path / "secret" / "signing.key"
    mine.parent.mkdir()
    mine.write_bytes(OLD_KEY + b"\n")
    state = start(signing_key_file=mine)
    assert state.issuer.verify(old_token()) == Principal("alice", "i")
    assert mine.read_bytes() == OLD_KEY + b"\n"
    assert state.db.one("SELECT token FROM signing_key") is None
    made = tmp_path / "secret" / "made.key"
    start(signing_key_file=made)  # a named file that is missing is made, 0600, in plaintext: the user's
    assert made.stat().st_mode & 0o777 == 0o600
