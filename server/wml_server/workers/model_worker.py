"""A user's model in a sandboxed process of its own (issue 16: a model is untrusted code).

The parent side: `ModelWorker` spawns `child.py` with an empty environment, sends it the model's bytes, and then
one batch of features at a time; it never unpickles anything the child sends (replies are JSON, checked field by
field) and bounds every wait. What the child can and cannot do is in child.py and landlock.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import orjson

from wml_server.workers import child as _child
from wml_server.workers.spawner import spawn

log = logging.getLogger(__name__)

MAX_FRAME = 64 << 20  # a reply larger than this is a protocol violation
STDERR_KEPT = 4096
CLOSE_GRACE = 2.0
FRAMEWORKS = ("scikit-learn", "skops")
_LIBRARIES = ("numpy", "scipy", "sklearn", "skops", "joblib", "threadpoolctl")
_CHILD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LANG": "C.UTF-8",
              "LC_ALL": "C.UTF-8"}
_MEMORY_SIGNALS = (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS)

Label = str | int | float | bool | None


class ModelLoadError(Exception):
    """The model could not be loaded. `message` is safe to show its owner."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ModelWorkerDied(Exception):
    """The worker is gone (exited, killed, timed out, broke the protocol); start a new one."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Prediction:
    labels: list[Label]  # None where that record failed
    probabilities: list[float | None]  # of the predicted label; None without predict_proba or where it failed
    errors: list[str | None]  # None, or "ExceptionType: first 200 characters" for a record the model raised on


class _Timeout(Exception):
    pass


class _Exited(Exception):
    pass


class _ProtocolError(Exception):
    pass


def library_paths() -> list[str]:
    """The sys.path entries that hold the model libraries (the child starts with -S: no site-packages)."""
    import importlib.util

    paths: list[str] = []
    for name in _LIBRARIES:
        spec = importlib.util.find_spec(name)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if spec and not locations and spec.origin:
            locations = [spec.origin]
        paths += [os.path.dirname(os.path.abspath(location)) for location in locations]
    return list(dict.fromkeys(paths))


class ModelWorker:
    def __init__(self, *, framework: str, content: bytes, fields: list[str], name: str,
                 memory_limit_bytes: int = 2 << 30, load_timeout: float = 60.0, predict_timeout: float = 60.0,
                 require_sandbox: bool = True) -> None:
        self.framework = framework
        self.fields = list(fields)
        self.name = name
        self.memory_limit_bytes = memory_limit_bytes
        self.load_timeout = load_timeout
        self.predict_timeout = predict_timeout
        self.require_sandbox = require_sandbox
        self.sandbox: str | None = None  # e.g. "landlock-abi-7" once started; None when running unsandboxed
        self.network_namespace = False  # whether the child also got an empty network namespace
        self.has_probabilities = False
        self._content: bytes | None = content
        self._proc: subprocess.Popen[bytes] | None = None
        self._call_lock = threading.Lock()  # one request/reply exchange at a time
        self._state_lock = threading.Lock()
        self._closed = False
        self._stderr = bytearray()
        self._stderr_lock = threading.Lock()
        self._stderr_thread: threading.Thread | None = None
        self._stderr_logged = False

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and not self._closed and proc.returncode is None else None

    def __enter__(self) -> ModelWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.framework not in FRAMEWORKS:
            raise ModelLoadError("model_load_failed", f"unknown model framework {self.framework!r}")
        with self._call_lock:
            if self._proc is not None or self._closed or self._content is None:
                raise ModelLoadError("model_worker_exited", "this model worker was already started or closed")
            content, self._content = self._content, None
            started = time.monotonic()
            proc = spawn([sys.executable, "-I", "-S", os.path.abspath(_child.__file__), str(os.getpid())],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(_CHILD_ENV),
                         cwd="/", close_fds=True, start_new_session=True)
            weakref.finalize(self, _kill_group, proc)  # a worker dropped without close() does not linger
            with self._state_lock:
                self._proc = proc
                closed = self._closed
            if closed:  # close() came while we spawned
                self._release()
                raise ModelLoadError("model_worker_exited", "the model's worker was closed")
            assert proc.stdin is not None
            assert proc.stdout is not None
            os.set_blocking(proc.stdin.fileno(), False)
            os.set_blocking(proc.stdout.fileno(), False)
            self._stderr_thread = threading.Thread(target=self._drain_stderr, name=f"model-stderr-{self.name}",
                                                   daemon=True)
            self._stderr_thread.start()
            header = {"framework": self.framework, "fields": self.fields, "memory_limit": self.memory_limit_bytes,
                      "require_sandbox": self.require_sandbox, "library_paths": library_paths()}
            deadline = time.monotonic() + self.load_timeout
            try:
                self._send(orjson.dumps(header), deadline)
                self._send(content, deadline)
                reply = self._receive(deadline)
                self._check_loaded(reply)
            except _Timeout:
                self._release()
                raise ModelLoadError("model_load_timeout",
                                     f"the model did not load within {self.load_timeout:g} s") from None
            except _Exited:
                message = self._exit_message()
                self._release()
                raise ModelLoadError("model_worker_exited", message) from None
            except _ProtocolError as exc:
                self._release()
                raise ModelLoadError("model_load_failed", f"the model's worker broke the protocol: {exc}") from None
            except BaseException:
                self._release()
                raise
            log.info("model worker %s (pid %d) loaded the model in %.2f s, sandbox: %s, network namespace: %s",
                     self.name, proc.pid, time.monotonic() - started, self.sandbox or "NONE", self.network_namespace)
            if self.sandbox is None:
                log.warning("model worker %s runs its model WITHOUT a sandbox (no Landlock in this kernel)", self.name)

    def _check_loaded(self, reply: dict[str, Any]) -> None:
        if reply.get("ok") is False:
            code, message = reply.get("code"), reply.get("message")
            if code not in ("model_load_failed", "model_sandbox_unavailable") or not isinstance(message, str):
                raise _ProtocolError("a load failure without a known code and a message")
            raise ModelLoadError(code, message[:600])
        sandbox, namespace, probabilities = reply.get("sandbox"), reply.get("network_namespace"), \
            reply.get("probabilities")
        if reply.get("ok") is not True or not (sandbox is None or isinstance(sandbox, str)) \
                or not isinstance(namespace, bool) or not isinstance(probabilities, bool):
            raise _ProtocolError("an unexpected load reply")
        if sandbox is None and self.require_sandbox:
            raise _ProtocolError("the worker runs without the sandbox it was required to have")
        self.sandbox, self.network_namespace, self.has_probabilities = sandbox, namespace, probabilities

    def predict(self, features: list[Any]) -> Prediction:
        count = len(features)
        payload = orjson.dumps({"op": "predict", "features": features})
        with self._call_lock:
            proc = self._proc
            if proc is None or self._closed or proc.returncode is not None:
                raise ModelWorkerDied("model_worker_exited", "the model's worker is not running")
            deadline = time.monotonic() + self.predict_timeout
            try:
                self._send(payload, deadline)
                return _prediction(self._receive(deadline), count)
            except _Timeout:
                self._release()
                raise ModelWorkerDied("model_timeout", f"the model did not score {count} records within "
                                      f"{self.predict_timeout:g} s") from None
            except _Exited:
                message = self._exit_message()
                self._release()
                raise ModelWorkerDied("model_worker_exited", message) from None
            except _ProtocolError as exc:
                self._release()
                raise ModelWorkerDied("model_protocol_error", f"the model's worker broke the protocol: {exc}") \
                    from None

    def close(self) -> None:
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            proc = self._proc
        if proc is None:
            return
        if self._call_lock.acquire(blocking=False):
            assert proc.stdin is not None
            with contextlib.suppress(OSError):
                proc.stdin.close()  # EOF: the child leaves its loop and exits
            _reap(proc, CLOSE_GRACE)
        else:  # a predict is waiting on the child: kill it, the predict sees the pipe close and raises
            self._kill()
            self._call_lock.acquire()
        try:
            self._release()
        finally:
            self._call_lock.release()

    # ---- the process ----------------------------------------------------------------------------------------

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        _kill_group(proc)  # its whole session: anything it forked too

    def _release(self) -> None:
        """Kill the worker, close its pipes, log its stderr once. Called holding the call lock."""
        proc = self._proc
        if proc is None:
            return
        self._kill()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        if self._stderr_thread is not None:
            self._stderr_thread.join(1.0)
            if not self._stderr_thread.is_alive() and proc.stderr is not None:
                proc.stderr.close()  # else a process that escaped the group kill holds it; the thread ends with it
        if not self._stderr_logged:
            self._stderr_logged = True
            self._log_stderr()

    def _drain_stderr(self) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        with contextlib.suppress(OSError, ValueError):
            while chunk := os.read(fd, 65536):
                with self._stderr_lock:
                    self._stderr += chunk
                    del self._stderr[:-STDERR_KEPT]

    def _stderr_tail(self) -> str:
        with self._stderr_lock:
            return self._stderr.decode("utf-8", "replace")

    def _log_stderr(self) -> None:
        if tail := self._stderr_tail().strip():
            log.debug("model worker %s stderr (last %d bytes):\n%s", self.name, STDERR_KEPT, tail)

    def _exit_message(self) -> str:
        proc = self._proc
        assert proc is not None
        code = _reap(proc, CLOSE_GRACE)  # a child that closed its pipes but lives on is killed
        if self._stderr_thread is not None:
            self._stderr_thread.join(1.0)
        if self._closed:
            return "the model's worker was closed"
        if code == _child.EXIT_MEMORY:
            message = f"the model's worker ran out of memory (its limit is {self.memory_limit_bytes >> 20} MiB)"
        elif code is not None and code < 0:
            name = _signal_name(-code)
            message = f"the model's worker was killed by {name}"
            if -code in _MEMORY_SIGNALS:
                message += ": over its memory limit?"
        elif code == _child.EXIT_ORPHAN:
            message = "the model's worker found its parent gone"
        else:
            message = f"the model's worker exited with code {code}"
        if last := _last_line(self._stderr_tail()):
            message += f" ({last})"
        return message

    # ---- framing --------------------------------------------------------------------------------------------

    def _send(self, payload: bytes, deadline: float) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        fd = proc.stdin.fileno()
        for data in (struct.pack(">I", len(payload)), payload):
            view = memoryview(data)
            while view:
                _wait(fd, select.POLLOUT, deadline)
                try:
                    written = os.write(fd, view)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ValueError):
                    raise _Exited from None
                view = view[written:]

    def _receive(self, deadline: float) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        (size,) = struct.unpack(">I", _read_exact(fd, 4, deadline))
        if size > MAX_FRAME:
            raise _ProtocolError(f"a reply of {size} bytes (at most {MAX_FRAME} are allowed)")
        try:
            reply = orjson.loads(_read_exact(fd, size, deadline))
        except orjson.JSONDecodeError:
            raise _ProtocolError("a reply that is not JSON") from None
        if not isinstance(reply, dict):
            raise _ProtocolError("a reply that is not a JSON object")
        return reply


def _wait(fd: int, event: int, deadline: float) -> None:
    poller = select.poll()
    poller.register(fd, event)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout
        ready = poller.poll(min(remaining, 1.0) * 1000)
        if ready:
            if ready[0][1] & select.POLLNVAL:
                raise _Exited
            return


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        _wait(fd, select.POLLIN, deadline)
        try:
            chunk = os.read(fd, min(size - len(chunks), 1 << 20))
        except BlockingIOError:
            continue
        except (OSError, ValueError):
            raise _Exited from None
        if not chunk:
            raise _Exited
        chunks += chunk
    return bytes(chunks)


def _prediction(reply: dict[str, Any], count: int) -> Prediction:
    labels, probabilities, errors = reply.get("labels"), reply.get("probabilities"), reply.get("errors")
    if reply.get("ok") is not True or not isinstance(labels, list) or not isinstance(probabilities, list) \
            or not isinstance(errors, list):
        raise _ProtocolError("an unexpected prediction reply")
    if not len(labels) == len(probabilities) == len(errors) == count:
        raise _ProtocolError(f"{len(labels)} labels, {len(probabilities)} probabilities and {len(errors)} errors "
                             f"for {count} records")
    for label, probability, error in zip(labels, probabilities, errors, strict=True):
        if label is not None and not isinstance(label, str | int | float | bool):
            raise _ProtocolError("a label that is not a string, number, boolean or null")
        if probability is not None and (isinstance(probability, bool) or not isinstance(probability, int | float)
                                        or not 0.0 <= probability <= 1.0):
            raise _ProtocolError("a probability that is not a number between 0 and 1 or null")
        if error is not None and (not isinstance(error, str) or len(error) > 400 or label is not None
                                  or probability is not None):
            raise _ProtocolError("an error that is not a short string beside a null label and probability")
    return Prediction(labels=labels, probabilities=[None if p is None else float(p) for p in probabilities],
                      errors=errors)


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """Wait up to `timeout` for the child to exit, without reaping it (its pid stays its process group's), kill
    that group (anything it forked), then reap it: its exit code, or -SIGKILL when it had to be killed."""
    deadline = time.monotonic() + timeout
    while proc.returncode is None and time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
        except ChildProcessError:
            break
        time.sleep(0.02)
    _kill_group(proc)
    return proc.returncode


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.returncode is None:  # not reaped yet: its pid is still its group's id
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5.0)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(text: str) -> str:
    """The last line of the child's stderr (a traceback's exception), short, without the libraries' paths."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(_child.__file__))))
    for path in sorted({sys.prefix, sys.base_prefix, source, *library_paths()}, key=len, reverse=True):
        line = line.replace(path, "…")
    return line[:160]
