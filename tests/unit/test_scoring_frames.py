"""The frames a batch crosses to a scoring worker in (engine/frames.py): what goes in comes out, and a frame
that does not add up is refused, not misread."""

from __future__ import annotations

import pytest

from wml_server.engine import frames
from wml_server.engine.records import ScoredBatch


def body(frame: bytes) -> bytes:
    (size,) = frames.SIZE.unpack_from(frame)
    assert size == len(frame) - frames.SIZE.size
    return frame[frames.SIZE.size:]


def test_values_cross_whole_with_empty_and_missing_ones() -> None:
    values: list[bytes | None] = [b'{"tweet": "good"}', b"", None, "é ☃".encode(), b"\x00\xff" * 1000]
    assert frames.unpack_values(body(frames.pack_values(values))) == values
    assert frames.unpack_values(body(frames.pack_values([]))) == []


def test_a_scored_batch_crosses_whole() -> None:
    batch = ScoredBatch([b'{"prediction": "POSITIVE"}', b"", b'{"error": "invalid_json"}'], [False, False, True])
    assert frames.unpack_scored(body(frames.pack_scored(batch)), 3) == batch


@pytest.mark.parametrize("cut", [0, 2, 5, -1])
def test_a_short_or_long_frame_is_refused(cut: int) -> None:
    request = body(frames.pack_values([b"abc", b"de"]))
    reply = body(frames.pack_scored(ScoredBatch([b"abc", b"de"], [False, True])))
    with pytest.raises(frames.FrameError):
        frames.unpack_values(request[:cut] if cut >= 0 else request + b"x")
    with pytest.raises(frames.FrameError):
        frames.unpack_scored(reply[:cut] if cut >= 0 else reply + b"x", 2)


def test_a_reply_for_another_number_of_records_is_refused() -> None:
    reply = body(frames.pack_scored(ScoredBatch([b"a"], [False])))
    with pytest.raises(frames.FrameError, match="1 records scored of 2 sent"):
        frames.unpack_scored(reply, 2)
