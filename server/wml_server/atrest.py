"""Credentials at rest: the start's key check, the one-time migration of a plaintext database and of a plaintext
signing.key, the key that signs tokens, and rotation.

The check runs before the database is opened for writing, on a read-only connection, so a refused start leaves
every byte of the data folder as it was. The database keeps one value encrypted by the key (table key_check):
a wrong key is told apart from a right one even before any deployment exists.
"""

from __future__ import annotations

import base64
import logging
import secrets
import sqlite3
from pathlib import Path

from wml_server.db import SECRET_COLUMNS, Database
from wml_server.vault import (
    KEY_FILE_SETTING,
    KeyFileError,
    Vault,
    is_encrypted,
    new_key,
    read_key_lines,
    write_key_file,
)

log = logging.getLogger(__name__)
CHECK_TEXT = "wml-server key check"
# Where services before the encrypted signing key kept it, in plaintext: taken over by signing_key().
LEGACY_SIGNING_KEY = "signing.key"


def check_key(database: Path, vault: Vault) -> None:
    """Raises KeyFileError when the database exists and its key check or any stored credential does not decrypt
    with the vault's keys. Reads only."""
    if not database.exists():
        return
    # Without a WAL file no connection has the database open (SQLite removes it at the last close): read it as
    # immutable, which creates no -wal or -shm file either; else read-only beside that connection.
    wal = database.with_name(database.name + "-wal")
    conn = sqlite3.connect(f"file:{database}?{'mode=ro' if wal.exists() else 'immutable=1'}", uri=True)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        values = []
        if "key_check" in tables:
            values += [row[0] for row in conn.execute("SELECT token FROM key_check")]
        for table, columns in SECRET_COLUMNS.items():
            if table not in tables:
                continue
            for column in columns:
                values += [row[0] for row in conn.execute(f"SELECT {column} FROM {table}")  # noqa: S608
                           if row[0] and is_encrypted(row[0])]
    finally:
        conn.close()
    for value in values:
        try:
            vault.decrypt(value)
        except KeyFileError:
            raise KeyFileError(f"the keys in {vault.path} ({KEY_FILE_SETTING}) do not decrypt the credentials "
                               f"stored in {database}: give the key file this database was encrypted with. "
                               "Nothing was changed.") from None


def secure(db: Database) -> int:
    """Once per database: encrypts every plaintext credential (a database from before encryption) and stores the
    key check, in one transaction; then rebuilds the file and empties the WAL, so no plaintext copy stays in
    freed pages or wml.sqlite3-wal. Returns the number of values encrypted."""
    statements = _reencrypt_statements(db, plaintext_only=True)
    if db.one("SELECT token FROM key_check") is None:
        statements.append(("INSERT INTO key_check (id, token) VALUES (1, ?)", (db.seal(CHECK_TEXT),)))
    if not statements:
        return 0
    db.transaction(statements)
    migrated = sum(1 for sql, _ in statements if sql.startswith("UPDATE"))
    if migrated:
        db.vacuum()
        log.info("encrypted %d stored credential(s) of a database from before encryption at rest", migrated)
    db.checkpoint()
    return migrated


def reencrypt(db: Database) -> int:
    """Every stored credential, the signing key and the key check encrypted under the key file's first key, in one
    transaction."""
    statements = _reencrypt_statements(db, plaintext_only=False)
    statements.append(("INSERT OR REPLACE INTO key_check (id, token) VALUES (1, ?)", (db.seal(CHECK_TEXT),)))
    db.transaction(statements)
    db.checkpoint()
    return len(statements) - 1


def _reencrypt_statements(db: Database, *, plaintext_only: bool) -> list[tuple[str, tuple[str, ...]]]:
    assert db.vault is not None
    statements: list[tuple[str, tuple[str, ...]]] = []
    for table, columns in SECRET_COLUMNS.items():
        for column in columns:
            for row in db.all(f"SELECT id, {column} AS value FROM {table} WHERE {column} IS NOT NULL"):  # noqa: S608
                if plaintext_only and is_encrypted(row["value"]):
                    continue
                statements.append((f"UPDATE {table} SET {column} = ? WHERE id = ?",  # noqa: S608
                                   (db.vault.reencrypt(row["value"]), row["id"])))
    return statements


def signing_key(db: Database) -> bytes:
    """The HS256 key that signs tokens, kept in the database encrypted by the key file (table signing_key), so
    a copy of the data folder cannot mint tokens. Made on the first start; the plaintext signing.key an older
    service left in the data folder is taken over once (the tokens it signed stay valid), then removed. Called
    after check_key and secure: the key file is known to open this database."""
    legacy = db.path.parent / LEGACY_SIGNING_KEY
    row = db.one("SELECT token FROM signing_key WHERE id = 1")
    if row is not None:
        key = base64.b64decode(db.unseal(row["token"]))
        if legacy.exists():  # a take-over that stopped between the commit and the removal
            _remove_legacy(legacy, key)
        return key
    old = legacy.read_bytes().strip() if legacy.exists() else b""
    key = old or secrets.token_urlsafe(48).encode()
    db.transaction([("INSERT INTO signing_key (id, token) VALUES (1, ?)",
                     (db.seal(base64.b64encode(key).decode()),))])
    if old:
        _remove_legacy(legacy, key)
        log.info("the token signing key of %s is now stored encrypted in the database; the plaintext file is "
                 "removed", legacy)
    return key


def _remove_legacy(legacy: Path, key: bytes) -> None:
    if legacy.read_bytes().strip() == key:
        legacy.unlink()
    else:  # not the key the database holds: someone's file, not ours to delete
        log.warning("%s is not the token signing key this service uses (that one is in the database): left as "
                    "it is; remove it, or name it with --signing-key-file to use it", legacy)


def rotate(key_file: Path, database: Path, *, new: bool, drop_old: bool) -> int:
    """`wml-server rotate-key`: with `new`, a new first key is written to the file (the old ones stay, so a
    running service still decrypts); every value is re-encrypted under the first key; with `drop_old`, then
    only the first key is kept. Runs beside a running service. Returns the number of values re-encrypted."""
    if not database.is_file():  # a wrong --data-dir: never start an empty database there
        raise KeyFileError(f"no database at {database}: name the service's data folder with --data-dir "
                           "(WML_SERVER_DATA_DIR); nothing was changed")
    keys = read_key_lines(key_file)
    vault = Vault(key_file)
    check_key(database, vault)  # the file must open this database before anything is written
    if new:
        keys = [new_key(), *keys]
        write_key_file(key_file, keys, replace=True)
    db = Database(database, vault)
    try:
        count = reencrypt(db)
        if drop_old and len(keys) > 1:
            # Again, now that the running service encrypts under the first key too: a row it wrote with an old
            # key between the file's change and its next read of the file would be lost with that key.
            count = reencrypt(db)
            write_key_file(key_file, keys[:1], replace=True)
    finally:
        db.close()
    return count
