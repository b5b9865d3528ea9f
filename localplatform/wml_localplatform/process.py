"""Starting and stopping the platform's processes by PID, and waiting for them to be ready."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class StartFailed(RuntimeError):
    """A platform process exited or did not become ready; the message holds its log's tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(name: str, argv: Sequence[str | os.PathLike[str]], log: Path, pid_file: Path,
          env: Mapping[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Starts argv in its own session (so a Ctrl-C in a terminal reaches our stop() first)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid} {name}\n")
    return proc


def _is_ours(pid: int, name: str) -> bool:
    """Guards against a stale PID file naming a PID that now belongs to another program."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return name in cmdline


def _read_pid_file(pid_file: Path) -> tuple[int, str] | None:
    try:
        pid_text, name = pid_file.read_text().split(maxsplit=1)
        return int(pid_text), name.strip()
    except (OSError, ValueError):
        return None


def stop_pid_file(pid_file: Path, timeout: float = 15.0) -> bool:
    """SIGTERM, then SIGKILL after timeout; True when a process was stopped."""
    entry = _read_pid_file(pid_file)
    if entry is None:
        return False
    pid, name = entry
    stopped = False
    if _is_ours(pid, name):
        stopped = True
        _signal(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            _signal(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
    pid_file.unlink(missing_ok=True)
    return stopped


def signal_pid_file(pid_file: Path, signum: signal.Signals) -> bool:
    """Sends a signal to the process of the PID file (when it is still ours); True when it was sent."""
    entry = _read_pid_file(pid_file)
    if entry is None or not _is_ours(*entry):
        return False
    _signal(entry[0], signum)
    return True


def kill_pid_file(pid_file: Path) -> bool:
    """kill -9, as in a crash: no shutdown handler runs. True when a process was killed."""
    entry = _read_pid_file(pid_file)
    if entry is None or not _is_ours(*entry):
        pid_file.unlink(missing_ok=True)
        return False
    _signal(entry[0], signal.SIGKILL)
    _wait_gone(entry[0], 10.0)
    pid_file.unlink(missing_ok=True)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Reap it if it is our child; otherwise just probe it.
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return True
        time.sleep(0.1)
    return False


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def is_running(pid_file: Path) -> bool:
    entry = _read_pid_file(pid_file)
    return entry is not None and _is_ours(*entry) and not _is_zombie(entry[0])


def wait_ready(what: str, probe: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path,
               timeout: float) -> float:
    """Polls probe until it returns True; returns seconds waited. Fails fast if the process exits."""
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise StartFailed(f"{what} exited with code {proc.returncode}; last lines of {log}:\n{log_tail(log)}")
        try:
            if probe():
                return time.monotonic() - started
        except Exception:  # noqa: S110 - any probe failure just means "not ready yet"
            pass
        if time.monotonic() - started > timeout:
            raise StartFailed(f"{what} not ready after {timeout:.0f} s; last lines of {log}:\n{log_tail(log)}")
        time.sleep(0.2)
