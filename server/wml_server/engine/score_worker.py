"""A scoring worker of a built-in model: `python -m wml_server.engine.score_worker <parent pid> <model id>`.

The service's engine runs one per core for a stream (engine/process_scorer.py): the model's predict and the
records' JSON work (engine/records.score_batch) run here, in an interpreter of their own, so a stream uses
every core instead of sharing one interpreter with the Kafka clients' threads. Trusted code (the service's own
models): no sandbox, unlike the workers of users' models (wml_server/workers/).

stdin brings request frames, stdout takes reply frames (engine/frames.py); the first reply is frames.READY (or
frames.FAILED and why) once the model is built. EOF on stdin ends it; it dies with the service (PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import BinaryIO

from wml_server.engine import frames

_PR_SET_PDEATHSIG = 1
EXIT_ORPHAN = 3


def _die_with(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)  # SIGKILL
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(EXIT_ORPHAN)


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    if len(data) != size:
        return None
    return data


def _reply(out: BinaryIO, body: bytes) -> None:
    out.write(frames.SIZE.pack(len(body)) + body)
    out.flush()


def serve(model_id: str, requests: BinaryIO, out: BinaryIO) -> None:
    from wml_server.engine.records import score_batch
    from wml_server.models.registry import default_registry

    try:
        model = default_registry().get(model_id)
        if model is None:
            raise LookupError(f"no built-in model {model_id}")
        model.predict(["warm up"])  # whatever the model builds lazily, before READY
    except Exception as exc:  # the parent reports it; nothing else can
        _reply(out, frames.FAILED + f"{type(exc).__name__}: {exc}".encode())
        return
    _reply(out, frames.READY)
    while True:
        head = _read_exact(requests, frames.SIZE.size)
        if head is None:
            return
        (size,) = frames.SIZE.unpack(head)
        body = _read_exact(requests, size)
        if body is None:
            return
        scored = score_batch(model, frames.unpack_values(body))
        out.write(frames.pack_scored(scored))
        out.flush()


def main(argv: list[str]) -> None:
    parent, model_id = int(argv[0]), argv[1]
    _die_with(parent)
    requests, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not land in the reply stream
    serve(model_id, requests, out)


if __name__ == "__main__":
    main(sys.argv[1:])
