"""The service's side of a built-in model's scoring worker (engine/score_worker.py): start, score, close.

`send` and `receive` are apart so that a stream (engine/scoring.Lanes) hands every worker its part of a batch
before waiting for any: the workers score at once, on as many cores, while this process waits in a read
with the GIL released. A worker that exits, is killed, or answers nonsense raises WorkerLost: the stream
reconnects (the open transaction is aborted by the fencing, its records read again) with new workers.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence

from wml_server.engine import frames
from wml_server.engine.records import ScoredBatch
from wml_server.workers.spawner import spawn

# By name: imported here, `python -m` of it would find it imported already (a RuntimeWarning in each worker).
WORKER_MODULE = "wml_server.engine.score_worker"


class WorkerLost(Exception):
    """The scoring worker is gone or not speaking the protocol; the message says how."""


class ProcessScorer:
    def __init__(self, model_id: str, name: str, answer_timeout: float = 60.0) -> None:
        self.model_id = model_id
        self.name = name
        self.answer_timeout = answer_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._sent: int | None = None  # records of the request awaiting its reply

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def spawn(self) -> None:
        # -m with the service's own sys.path: the worker imports wml_server as the service does.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = spawn([sys.executable, "-m", WORKER_MODULE, str(os.getpid()), self.model_id],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)

    def wait_ready(self, timeout: float) -> None:
        body = self._read_frame(time.monotonic() + timeout)
        if body.startswith(frames.FAILED):
            self.close()
            raise WorkerLost(f"the scoring worker could not build the model: "
                             f"{body[len(frames.FAILED):].decode(errors='replace')}")
        if body != frames.READY:
            self.close()
            raise WorkerLost("the scoring worker did not say it was ready")

    def start(self, timeout: float = 60.0) -> ProcessScorer:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def send(self, values: Sequence[bytes | None]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise WorkerLost("the scoring worker is closed")
        try:
            proc.stdin.write(frames.pack_values(values))
            proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise WorkerLost(self._exit_message()) from None
        self._sent = len(values)

    def receive(self) -> ScoredBatch:
        expected, self._sent = self._sent, None
        if expected is None:
            raise WorkerLost("a reply awaited with no request sent")
        body = self._read_frame(time.monotonic() + self.answer_timeout)
        try:
            return frames.unpack_scored(body, expected)
        except frames.FrameError as exc:
            self._kill()
            raise WorkerLost(f"the scoring worker answered nonsense: {exc}") from None

    def score(self, values: Sequence[bytes | None]) -> ScoredBatch:
        self.send(values)
        return self.receive()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # EOF: the worker ends by itself
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
        if proc.stdout is not None:
            proc.stdout.close()

    def ended(self) -> str | None:
        """None while the worker runs; else how it ended."""
        proc = self._proc
        if proc is None or proc.poll() is None:
            return None
        return self._exit_message()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def _read_frame(self, deadline: float) -> bytes:
        head = self._read_exact(frames.SIZE.size, deadline)
        (size,) = frames.SIZE.unpack(head)
        if size > frames.MAX_FRAME:
            self._kill()
            raise WorkerLost(f"the scoring worker announced a frame of {size} bytes")
        return self._read_exact(size, deadline)

    def _read_exact(self, size: int, deadline: float) -> bytes:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise WorkerLost("the scoring worker is closed")
        fd = proc.stdout.fileno()
        parts: list[bytes] = []
        left = size
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                self._kill()
                raise WorkerLost(f"the scoring worker did not answer within {self.answer_timeout:.0f} s")
            try:
                chunk = os.read(fd, min(left, 1 << 20))
            except OSError:
                chunk = b""
            if not chunk:
                raise WorkerLost(self._exit_message())
            parts.append(chunk)
            left -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _exit_message(self) -> str:
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
        if code is None:
            return f"the scoring worker of {self.name} stopped answering"
        if code < 0:
            return f"the scoring worker of {self.name} was killed by signal {-code}"
        return f"the scoring worker of {self.name} exited with code {code}"
