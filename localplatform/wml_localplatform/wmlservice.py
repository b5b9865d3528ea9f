"""The WML service as a process on 127.0.0.1, for the tests and the demo: start, stop, kill -9, users."""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from wml_localplatform import process


@dataclass(frozen=True)
class WMLUser:
    username: str
    password: str = field(repr=False)
    instance_id: str


# Every password this module made: the test suite's secret scanner looks for them in what the run produced.
ISSUED_PASSWORDS: list[str] = []
# Every data folder a service of this module used: the scanner reads each of their files for a plaintext secret.
DATA_DIRS: list[Path] = []
# Every key file a service of this module used: its keys must not appear in a log or a data folder either.
KEY_FILES: list[Path] = []
KEY_FILE_ENV = "WML_SERVER_KEY_FILE"
# Every audit trail a service of this module wrote to a file: the scanner looks in them for every secret a test
# handed out (passwords included), not only the stored credentials it looks for in a data folder.
AUDIT_FILES: list[Path] = []
AUDIT_LOG_ENV = "WML_SERVER_AUDIT_LOG"


def make_key_file(path: Path) -> Path:
    """A key file for the service (one new Fernet key, 0600), unless one is there already: a restarted service
    must find the key its database was encrypted with."""
    if not path.exists():
        from cryptography.fernet import Fernet

        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(Fernet.generate_key() + b"\n")
    return path


class WMLService:
    def __init__(self, directory: Path, *, port: int | None = None, env: dict[str, str] | None = None,
                 ca_file: Path | None = None) -> None:
        """With WML_SERVER_TLS_CERT in env the service serves HTTPS; ca_file is the CA that signed it. Without
        WML_SERVER_KEY_FILE in env, the key that encrypts stored credentials is made in directory/keys (beside
        the data folder, never in it)."""
        self.dir = directory
        self.ca_file = ca_file
        self.port = port or process.free_port()
        self.env = dict(env or {})
        # A key file the caller names is theirs (a test of a missing one); the default one is made at start.
        self.own_key = KEY_FILE_ENV not in self.env
        self.key_file = Path(self.env.get(KEY_FILE_ENV) or directory / "keys" / "wml.key")
        self.env.setdefault(KEY_FILE_ENV, str(self.key_file))
        DATA_DIRS.append(self.data_dir)
        KEY_FILES.append(self.key_file)
        if self.audit_file is not None:
            AUDIT_FILES.append(self.audit_file)
        self.pid_file = directory / "wml-server.pid"
        self.log = directory / "logs" / "wml-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def audit_file(self) -> Path | None:
        """The service's audit trail (WML_SERVER_AUDIT_LOG), or None when it goes to standard output: its log."""
        target = self.env.get(AUDIT_LOG_ENV) or str(self.data_dir / "audit.jsonl")
        return None if target == "-" else Path(target)

    def audit_records(self) -> list[dict[str, str]]:
        """The audit trail's lines, oldest first (none before the first change)."""
        path = self.audit_file
        if path is None or not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    @property
    def url(self) -> str:
        scheme = "https" if self.env.get("WML_SERVER_TLS_CERT") else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _cli(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run([sys.executable, "-m", "wml_server", *args, "--data-dir", str(self.dir / "data")],
                                input=stdin, capture_output=True, text=True, timeout=60, check=False,
                                env={**os.environ, **self.env})
        if result.returncode != 0:
            raise process.StartFailed(f"wml-server {args[0]} failed: {result.stderr.strip()}")
        return result.stdout

    def add_user(self, username: str | None = None, instance_id: str | None = None,
                 password: str | None = None) -> WMLUser:
        """A user bound to an instance; the same name, instance and password as on another service make the
        login a migration between the two keeps."""
        user = WMLUser(username or f"user-{uuid.uuid4().hex[:6]}", password or secrets.token_urlsafe(16),
                       instance_id or str(uuid.uuid4()))
        self._cli("add-user", user.username, "--instance-id", user.instance_id, "--password-stdin",
                  stdin=user.password + "\n")
        ISSUED_PASSWORDS.append(user.password)
        return user

    def delete_user(self, username: str) -> None:
        """Removes a user: its credentials and the tokens already issued to it stop working at once."""
        self._cli("delete-user", username)

    def start(self, timeout: float = 30.0) -> float:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.own_key:
            make_key_file(self.key_file)
        self.proc = process.start("wml_server", [sys.executable, "-m", "wml_server", "serve",
                                                 "--host", "127.0.0.1", "--port", str(self.port),
                                                 "--data-dir", str(self.dir / "data")],
                                  self.log, self.pid_file, env=self.env)
        return process.wait_ready("WML service", self._healthy, self.proc, self.log, timeout)

    def _healthy(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=2, context=context) as resp:  # noqa: S310
            return bool(json.load(resp).get("status") == "ok")

    def stop(self, spark_drivers: bool = True) -> None:
        """Stops the service and (unless told not to) its Spark drivers, which outlive a service by design."""
        process.stop_pid_file(self.pid_file, timeout=20.0)
        self.proc = None
        if spark_drivers:
            self.stop_spark_drivers()

    def spark_driver_pid_files(self) -> list[Path]:
        return sorted((self.dir / "data" / "spark").glob("*/driver.pid"))

    def stop_spark_drivers(self) -> None:
        for pid_file in self.spark_driver_pid_files():
            process.stop_pid_file(pid_file, timeout=60.0)

    def kill(self) -> None:
        """kill -9: no shutdown handler runs, as in a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.pid_file.unlink(missing_ok=True)
            self.proc = None
