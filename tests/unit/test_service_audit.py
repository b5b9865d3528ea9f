"""The audit trail's writer (wml_server.audit): the line format, no field that could carry a secret, a 0600 file,
whole lines under concurrent writers (threads of one process and another process), and the CLI's user events."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from wml_localplatform.wmlservice import AUDIT_FILES, WMLService
from wml_server import audit
from wml_server.__main__ import main
from wml_server.audit import AuditLog, line
from wml_server.settings import Settings

pytestmark = pytest.mark.unit

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(text) for text in path.read_text().splitlines()]


def test_a_line_is_one_json_object_with_utc_millisecond_time() -> None:
    data = line("deployment.created", user="alice", instance="iid", client="127.0.0.1", outcome="ok",
                deployment_id="did", model_id=None)
    assert data.endswith(b"\n")
    assert data.count(b"\n") == 1
    record = json.loads(data)
    assert TIME.match(record.pop("time"))
    # Fields left None are left out; the order is FIELDS', so lines read alike.
    assert record == {"event": "deployment.created", "user": "alice", "instance": "iid", "client": "127.0.0.1",
                      "outcome": "ok", "deployment_id": "did"}


@pytest.mark.parametrize("field", ["password", "token", "api_key", "authorization", "connection", "credentials",
                                   "body", "spark"])
def test_no_field_that_could_carry_a_secret(field: str) -> None:
    assert field not in audit.FIELDS
    with pytest.raises(ValueError, match="no field"):
        line("token.issued", user="alice", **{field: "s3cret-value"})


def test_only_strings_and_only_known_events() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        line("deployment.patched", state={"value": "RUNNING"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown audit event"):
        line("deployment.scored", user="alice")


def test_a_name_with_a_newline_cannot_forge_a_second_line() -> None:
    tried = 'mallory\n{"event":"user.added"}'
    data = line("token.refused", user=tried + "x" * 500, outcome="refused")
    assert data.count(b"\n") == 1
    assert json.loads(data)["user"] == (tried + "x" * 500)[:audit.MAX_VALUE]


def test_the_file_is_0600_and_appended(tmp_path: Path) -> None:
    path = tmp_path / "data" / "audit.jsonl"
    first = AuditLog(path)
    first.record("user.added", user="root", username="alice", instance="iid", client="cli")
    first.close()
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)  # made wider by hand: the next writer narrows it again
    second = AuditLog(path)
    second.record("user.removed", user="root", username="alice", instance="iid", client="cli")
    second.close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert [r["event"] for r in lines(path)] == ["user.added", "user.removed"]


def test_dash_is_standard_output(capfd: pytest.CaptureFixture[str]) -> None:
    trail = AuditLog("-")
    trail.record("token.issued", user="alice", instance="iid", client="127.0.0.1", via="v3")
    trail.close()  # standard output is not ours to close
    out = capfd.readouterr().out
    assert json.loads(out)["event"] == "token.issued"
    os.fstat(1)  # still open


def test_a_write_that_fails_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trail = AuditLog(tmp_path / "audit.jsonl")
    trail.close()
    trail.record("model.deleted", user="alice", model_id="mid")  # a closed descriptor: EBADF
    assert "could not write the audit line of model.deleted" in caplog.text


WRITER = """
import sys
from wml_server.audit import AuditLog
trail = AuditLog(sys.argv[1])
for i in range(int(sys.argv[2])):
    trail.record("deployment.patched", user="other-process", deployment_id=str(i) * 40, state="RUNNING")
"""


def test_concurrent_writers_never_interleave_a_line(tmp_path: Path) -> None:
    """Eight threads of this process and one other process (as `wml-server add-user` beside the service) append
    to the same file at once: every line parses and none is lost."""
    path = tmp_path / "audit.jsonl"
    trail = AuditLog(path)
    per_thread, other = 300, 1000
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(other)], env=env)

    def write(n: int) -> None:
        for i in range(per_thread):
            trail.record("deployment.created", user=f"thread-{n}", deployment_id=f"{n}-{i}-" + "x" * 100)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert proc.wait(60) == 0
    trail.close()
    records = lines(path)  # json.loads fails on any torn or merged line
    assert len(records) == 8 * per_thread + other
    assert sum(r["user"] == "other-process" for r in records) == other
    assert len({r["deployment_id"] for r in records if r["user"] != "other-process"}) == 8 * per_thread


def test_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WML_SERVER_AUDIT_LOG", raising=False)
    assert Settings(data_dir=tmp_path).audit_target == tmp_path / "audit.jsonl"
    assert Settings(data_dir=tmp_path, audit_log="-").audit_target == "-"
    monkeypatch.setenv("WML_SERVER_AUDIT_LOG", str(tmp_path / "elsewhere.jsonl"))
    assert Settings(data_dir=tmp_path).audit_target == tmp_path / "elsewhere.jsonl"


def test_add_user_and_delete_user_are_recorded_without_the_password(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data, instance, password = tmp_path / "data", str(uuid.uuid4()), "correct horse battery"
    monkeypatch.delenv("WML_SERVER_AUDIT_LOG", raising=False)
    for _ in range(2):  # the second add replaces the first: recorded as an update
        monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
        assert main(["add-user", "alice", "--instance-id", instance, "--password-stdin",
                     "--data-dir", str(data)]) == 0
    assert main(["delete-user", "alice", "--data-dir", str(data)]) == 0
    assert main(["delete-user", "alice", "--data-dir", str(data)]) == 1  # no user: no change, no line
    assert main(["list-users", "--data-dir", str(data)]) == 0
    text = (data / "audit.jsonl").read_text()
    assert password not in text
    records = lines(data / "audit.jsonl")
    assert [(r["event"], r.get("reason")) for r in records] == \
        [("user.added", "new"), ("user.added", "updated"), ("user.removed", None)]
    for record in records:
        assert (record["username"], record["instance"], record["client"]) == ("alice", instance, "cli")
        assert record["user"] == audit.os_user()
        assert TIME.match(record["time"])


def test_the_local_platform_hands_each_trail_to_the_secret_scanner(tmp_path: Path) -> None:
    """tests/conftest.py scans every file of AUDIT_FILES for every secret the tests handed out."""
    default = WMLService(tmp_path / "a")
    assert default.audit_file == default.data_dir / "audit.jsonl"
    elsewhere = WMLService(tmp_path / "b", env={"WML_SERVER_AUDIT_LOG": str(tmp_path / "trail.jsonl")})
    assert elsewhere.audit_file == tmp_path / "trail.jsonl"
    assert {default.audit_file, elsewhere.audit_file} <= set(AUDIT_FILES)
    # "-": the trail is in the service's log, which the scanner reads with every other log.
    assert WMLService(tmp_path / "c", env={"WML_SERVER_AUDIT_LOG": "-"}).audit_file is None


def test_a_trail_that_cannot_be_opened_stops_the_command_before_any_change(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    data, blocker = tmp_path / "data", tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"))
    assert main(["add-user", "alice", "--instance-id", str(uuid.uuid4()), "--password-stdin",
                 "--data-dir", str(data), "--audit-log", str(blocker / "audit.jsonl")]) == 2
    assert "error: cannot open the audit trail" in capsys.readouterr().err
    assert main(["list-users", "--data-dir", str(data)]) == 0
    assert "alice" not in capsys.readouterr().out


def test_a_moved_or_deleted_trail_is_followed_by_a_new_file(tmp_path: Path) -> None:
    """logrotate's default (`create`) moves the file away; nobody has to tell the service: the next line starts a
    new 0600 file at the configured path, and the moved one keeps what it had."""
    path = tmp_path / "audit.jsonl"
    trail = AuditLog(path)
    try:
        trail.record("user.added", username="alice", client="cli")
        path.rename(tmp_path / "audit.jsonl.1")
        trail.record("user.added", username="bob", client="cli")
        path.unlink()
        trail.record("user.added", username="carol", client="cli")
        trail.record("user.added", username="dave", client="cli")
    finally:
        trail.close()
    names = [json.loads(x)["username"] for x in (tmp_path / "audit.jsonl.1").read_text().splitlines()]
    assert names == ["alice"]
    assert [json.loads(x)["username"] for x in path.read_text().splitlines()] == ["carol", "dave"]
    assert path.stat().st_mode & 0o777 == 0o600
