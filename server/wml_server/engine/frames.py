"""How a batch crosses between the service and a scoring worker: one frame each way, no per-record header.

Request:  u64 size | u32 n | n x i32 lengths (-1: no value) | the values, end to end
Reply:    u64 size | u32 n | n x u32 lengths | n x u8 failed | the values, end to end

Records are bytes on both sides (Kafka's values), so a batch is one `b"".join` and one `struct.pack` of its
lengths going out, and one slice per record coming back: bench/scoring_frames.py measures it per record beside
the model's own cost. Pickle would be as fast here but is not a format to read from another process; Arrow
would add a dependency and a copy into its buffers for data that is already contiguous bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from wml_server.engine.records import ScoredBatch

SIZE = struct.Struct("<Q")
COUNT = struct.Struct("<I")
READY = b"READY"  # a worker's first reply once its model is built
FAILED = b"FAILED "  # ... or this, and why
MAX_FRAME = 4 * 1024 * 1024 * 1024  # 2,000 records of at most 1 MB each, in and out, fit with room to spare


class FrameError(ValueError):
    """A frame that does not add up: the other side is not speaking this protocol."""


def pack_values(values: Sequence[bytes | None]) -> bytes:
    lengths = [-1 if v is None else len(v) for v in values]
    body = b"".join([COUNT.pack(len(values)), struct.pack(f"<{len(values)}i", *lengths),
                     *(v for v in values if v is not None)])
    return SIZE.pack(len(body)) + body


def unpack_values(body: bytes) -> list[bytes | None]:
    (n,) = _count(body)
    head = COUNT.size + 4 * n
    if len(body) < head:
        raise FrameError("a request shorter than its lengths")
    lengths = struct.unpack_from(f"<{n}i", body, COUNT.size)
    out: list[bytes | None] = []
    at = head
    for length in lengths:
        if length < 0:
            out.append(None)
            continue
        out.append(body[at:at + length])
        at += length
    if at != len(body):
        raise FrameError("a request whose values do not add up to its size")
    return out


def pack_scored(batch: ScoredBatch) -> bytes:
    n = len(batch.values)
    body = b"".join([COUNT.pack(n), struct.pack(f"<{n}I", *map(len, batch.values)), bytes(batch.failed),
                     *batch.values])
    return SIZE.pack(len(body)) + body


def unpack_scored(body: bytes, expected: int) -> ScoredBatch:
    (n,) = _count(body)
    if n != expected:
        raise FrameError(f"{n} records scored of {expected} sent")
    head = COUNT.size + 5 * n
    if len(body) < head:
        raise FrameError("a reply shorter than its lengths")
    lengths = struct.unpack_from(f"<{n}I", body, COUNT.size)
    failed = [flag != 0 for flag in body[COUNT.size + 4 * n:head]]
    values = []
    at = head
    for length in lengths:
        values.append(body[at:at + length])
        at += length
    if at != len(body):
        raise FrameError("a reply whose values do not add up to its size")
    return ScoredBatch(values, failed)


def _count(body: bytes) -> tuple[int]:
    if len(body) < COUNT.size:
        raise FrameError("a frame without its record count")
    return COUNT.unpack_from(body)
