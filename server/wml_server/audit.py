"""The audit trail: one JSON line per change (tokens, deployments, models, users), for who-did-what forensics.

Lines go to a file (WML_SERVER_AUDIT_LOG, default DATA_DIR/audit.jsonl, 0600) or, with "-", to standard output.
Each line is written whole by one write() on a descriptor opened with O_APPEND: the service's threads (under a
lock) and a separate `wml-server add-user` process append to the same file without ever interleaving a line,
and nothing sits in a buffer when the process dies.

Only the fields named in FIELDS can be written, each a short string: a caller cannot pass a request body, a
password, a token or a connection by mistake (a test asserts it), so the file is safe to hand to whoever audits.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("wml_server.audit")

STDOUT = "-"
# The audit file's name in the data folder when WML_SERVER_AUDIT_LOG is not set.
DEFAULT_NAME = "audit.jsonl"
# Every field a line may carry. The object ids are named for their kind, so a reader can filter by them.
FIELDS = ("time", "event", "user", "instance", "client", "outcome", "deployment_id", "model_id", "version_id",
          "username", "state", "via", "reason")
EVENTS = ("token.issued", "token.refused", "deployment.created", "deployment.patched", "deployment.deleted",
          "model.created", "model.published", "model.version.deleted", "model.deleted", "user.added",
          "user.removed")
# A username tried at the token endpoint is whatever the client sent: kept short, so a line stays one write()
# well under PIPE_BUF (4096 bytes, atomic on a pipe when the trail goes to standard output).
MAX_VALUE = 200
CLI = "cli"


class AuditTrailError(Exception):
    """The trail cannot be opened: the service does not start, a user command changes nothing."""


def now() -> str:
    """UTC, ISO 8601 with milliseconds and a Z: sorts as text, and reads the same in every time zone."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def line(event: str, **fields: str | None) -> bytes:
    """One event as a JSON line. Raises ValueError for an event or a field not listed above (a programming error,
    caught by the tests): that is what keeps secrets out, not the callers' care."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"audit lines carry no field {sorted(unknown)}")
    record: dict[str, str] = {"time": now(), "event": event}
    for name in FIELDS:
        value = fields.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise ValueError(f"audit field {name} must be a string, got {type(value).__name__}")
            record[name] = value[:MAX_VALUE]
    # ensure_ascii: a name with a newline or any control character is escaped, so it cannot forge a second line.
    return (json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


class AuditLog:
    """Appends audit lines to target: a path, or "-" for standard output."""

    def __init__(self, target: Path | str) -> None:
        self.target = str(target)
        self._lock = threading.Lock()
        if self.target == STDOUT:
            self._fd = 1  # the descriptor, not sys.stdout: one write() a line, past any buffer of Python's
            self._owned = False
        else:
            self._owned = True
            self._fd = -1
            self._open()

    def _open(self) -> None:
        path = Path(self.target)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AuditTrailError(f"cannot open the audit trail {path} (WML_SERVER_AUDIT_LOG, --audit-log): "
                                  f"{exc.strerror}") from None
        try:
            # O_CREAT's mode applies only to a new file (and through the umask): an older, wider one is narrowed.
            os.fchmod(fd, 0o600)
        except PermissionError:
            log.warning("cannot make the audit file %s 0600: it is not this user's", path)
        self._fd = fd

    def _follow_rotation(self) -> None:
        """A trail moved or deleted (logrotate's default `create`, or by hand) is not written to any more: the next
        line starts a new file at the configured path, as logging's WatchedFileHandler does. One stat a change."""
        try:
            now_at_path = os.stat(self.target)
            held = os.fstat(self._fd)
            if (now_at_path.st_dev, now_at_path.st_ino) == (held.st_dev, held.st_ino):
                return
        except FileNotFoundError:
            pass
        except OSError:
            return  # cannot tell (a folder made unreadable): keep the file held rather than fail the change
        old = self._fd
        try:
            self._open()
        except AuditTrailError as exc:
            log.error("%s; still writing to the moved file", exc)
            return
        os.close(old)

    def record(self, event: str, **fields: str | None) -> None:
        data = line(event, **fields)
        with self._lock:
            if self._owned and self._fd >= 0:
                self._follow_rotation()
            try:
                written = os.write(self._fd, data)
                while written < len(data):  # only on a signal or a full disk; the rest follows at once
                    written += os.write(self._fd, data[written:])
            except OSError as exc:
                # A full disk must not stop the service from serving; the failure is in its log instead.
                log.error("could not write the audit line of %s to %s: %s", event, self.target, exc)

    def close(self) -> None:
        with self._lock:
            if self._owned and self._fd >= 0:
                os.close(self._fd)
            self._fd = -1


def os_user() -> str:
    """The local account that ran a CLI command (a uid when it has no name, as in many containers)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
