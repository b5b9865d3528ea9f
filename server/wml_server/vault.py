"""The key that encrypts every credential the service stores (issue 21), kept apart from the database.

A key file holds one or more Fernet keys (cryptography's AES-128-CBC + HMAC-SHA256 tokens), one per line: the
first encrypts, every one decrypts (MultiFernet). Stored values carry PREFIX, so a plaintext row of a database
from before encryption is recognised and migrated, never mistaken for ciphertext.

Rotation writes the file anew (atomically) while the service runs: the service sees the change by the file's
stat before each encryption, and re-reads the file when a value does not decrypt with the keys it holds.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "enc:v1:"
KEY_FILE_SETTING = "--key-file (WML_SERVER_KEY_FILE)"
GENERATE_HINT = "wml-server generate-key --key-file PATH"


class KeyFileError(Exception):
    """The key file is missing, unreadable or malformed, or its keys do not open this database. The message
    names the setting and what to run; it never holds a key or a stored value."""


def parse_keys(text: str, source: Path) -> list[Fernet]:
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(Fernet(line.encode()))
        except ValueError:
            raise KeyFileError(f"{source} ({KEY_FILE_SETTING}), line {number}: not a Fernet key (32 url-safe "
                               f"base64-encoded bytes); make a key file with `{GENERATE_HINT}`") from None
    if not keys:
        raise KeyFileError(f"{source} ({KEY_FILE_SETTING}) holds no key; make one with `{GENERATE_HINT}`")
    return keys


def read_key_lines(path: Path) -> list[str]:
    """The key file's keys, first (the one that encrypts) first, checked."""
    text = _read(path)
    parse_keys(text, path)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise KeyFileError(f"the key file {path} named by {KEY_FILE_SETTING} does not exist; make one with "
                           f"`{GENERATE_HINT}` (or restore the one this database was encrypted with)") from None
    except OSError as exc:
        raise KeyFileError(f"the key file {path} named by {KEY_FILE_SETTING} cannot be read: "
                           f"{exc.strerror}") from None


def write_key_file(path: Path, keys: list[str], *, replace: bool) -> None:
    """Writes keys to path, 0600, atomically (a reader sees the old file or the new one, never half of one).
    Without `replace`, an existing file is refused: a key file lost is a database lost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not replace and path.exists():
        raise KeyFileError(f"{path} exists; a key file is never overwritten (its database could not be opened "
                           "again): choose another path, or use `wml-server rotate-key`")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp creates it 0600
            out.write("".join(f"{key}\n" for key in keys))
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path appeared meanwhile: never overwrites
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def new_key() -> str:
    return Fernet.generate_key().decode()


def is_encrypted(value: str) -> bool:
    return value.startswith(PREFIX)


class Vault:
    """Encrypts and decrypts stored values with the keys of one key file, following that file's changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._fernet = self._load()

    def _load(self) -> MultiFernet:
        stamp = self._stat()
        fernet = MultiFernet(parse_keys(_read(self.path), self.path))
        self._stamp = stamp
        return fernet

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _current(self) -> MultiFernet:
        """The keys as the file has them now: a rotation replaced it (a Secret's update swaps it too)."""
        with self._lock:
            if self._stat() not in (None, self._stamp):
                self._fernet = self._load()
            return self._fernet

    def encrypt(self, plaintext: str) -> str:
        return PREFIX + self._current().encrypt(plaintext.encode()).decode()

    def decrypt(self, stored: str) -> str:
        """A stored value's plaintext; a value without PREFIX is refused (migration encrypts those first)."""
        if not is_encrypted(stored):
            raise KeyFileError("a stored credential is not encrypted; start the service to migrate the database")
        token = stored.removeprefix(PREFIX).encode()
        try:
            return self._current().decrypt(token).decode()
        except InvalidToken:
            pass
        with self._lock:  # encrypted under a key this process has not read yet: rotate-key ran meanwhile
            self._fernet = self._load()
            fernet = self._fernet
        try:
            return fernet.decrypt(token).decode()
        except InvalidToken:
            raise KeyFileError(f"a stored credential does not decrypt with any key of {self.path} "
                               f"({KEY_FILE_SETTING}): it is not the key file this database was encrypted "
                               "with") from None

    def reencrypt(self, stored: str) -> str:
        """The value encrypted under the file's first key (a plaintext value is encrypted)."""
        plaintext = self.decrypt(stored) if is_encrypted(stored) else stored
        return self.encrypt(plaintext)
