"""From input records to output records: pure functions, no Kafka.

The topic format (the original never documented one, so this is ours):
- input: a JSON object, UTF-8; the text to score is its `tweet` field, else its `text` field.
- output: the input's fields plus `prediction` ("POSITIVE" / "NEGATIVE") and `probability` (the probability
  of that prediction, 4 decimals).
- a record that cannot be scored does not stop the stream: it goes out with an `error` code instead:
  `invalid_json` (not UTF-8 JSON; `raw` holds its first 200 characters, lossy-decoded), `not_an_object`
  (valid JSON but not an object; `raw` as before), `missing_text` (the input object, no string `tweet` or
  `text`), `record_too_large` (input over 1 MB, or an output that would exceed it; `size` and `raw`).
  `ScoredBatch.failed` flags them, whatever their code: a stream with a dead-letter topic sends them there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from wml_server.models.base import Model

# 1 MB: what Kafka accepts by default (message.max.bytes). Outputs stay within it too, so producing a
# scored record never fails on size with a topic left at the default limit.
MAX_RECORD_BYTES = 1_000_000
MAX_OUTPUT_BYTES = 1_000_000
RAW_PREVIEW_CHARS = 200
TEXT_FIELDS = ("tweet", "text")

INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_TEXT = "missing_text"
RECORD_TOO_LARGE = "record_too_large"


@dataclass(frozen=True)
class ScoredBatch:
    """Output values in input order (one per input record) and, per record, whether its value is an error record
    (one carrying an `error` code, whichever): those go to the dead-letter topic when the stream has one."""

    values: list[bytes]
    failed: list[bool]

    @property
    def errored(self) -> int:
        return sum(self.failed)


class _NotJSON(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; accepting them would make us write invalid JSON downstream.
    raise _NotJSON(name)


# Made once: json.loads / json.dumps with options build a new decoder / encoder at every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def preview(value: bytes) -> str:
    """The first characters of a record, readable whatever its bytes are (4 bytes at most per character)."""
    return value[: RAW_PREVIEW_CHARS * 4].decode("utf-8", errors="replace")[:RAW_PREVIEW_CHARS]


# orjson parses and writes records several times faster than the standard library (a share of each record's
# scoring that counts; docs/PERFORMANCE.md), with the same answers but one: an integer past 64 bits comes back
# as a float. A record with 19
# digits in a row or more (19 and 20 can be past it; a long fraction also matches, harmlessly) is read by the
# standard library, as is any record orjson refuses, so that what counts as invalid, and why, stays its own.
_MAYBE_PAST_64_BITS = re.compile(rb"\d{19}")
_DIGITS = b"0123456789"


def _maybe_past_64_bits(value: bytes) -> bool:
    # The regular expression alone costs more than orjson's parse of a tweet (it tries at every byte); fewer than
    # 19 digits in all, which is most records, cannot hold 19 in a row, and counting them is much cheaper.
    return len(value) - len(value.translate(None, _DIGITS)) >= 19 and _MAYBE_PAST_64_BITS.search(value) is not None


def _load(value: bytes) -> Any:
    if not _maybe_past_64_bits(value):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    return _DECODER.decode(value.decode("utf-8"))


def _dump(obj: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # an integer past 64 bits (read by the standard library): write it the same way
        return _ENCODER.encode(obj).encode("utf-8")


def _too_large(value: bytes, size: int) -> bytes:
    return _dump({"error": RECORD_TOO_LARGE, "size": size, "raw": preview(value)})


def parse(value: bytes | None) -> dict[str, Any] | bytes:
    """The input object, or the error record to send instead."""
    if value is None:
        return _dump({"error": INVALID_JSON, "raw": ""})
    if len(value) > MAX_RECORD_BYTES:
        return _too_large(value, len(value))
    try:
        obj = _load(value)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _dump({"error": INVALID_JSON, "raw": preview(value)})
    if not isinstance(obj, dict):
        return _dump({"error": NOT_AN_OBJECT, "raw": preview(value)})
    return obj


def text_of(record: dict[str, Any]) -> str | None:
    for name in TEXT_FIELDS:
        text = record.get(name)
        if isinstance(text, str):
            return text
    return None


def score_batch(model: Model, messages: Sequence[bytes | None], *,
                max_output_bytes: int = MAX_OUTPUT_BYTES) -> ScoredBatch:
    """Scores a batch of input values with one `model.predict` call; never raises for a bad record."""
    batch = prepare(messages, _text_or_refusal)
    labels, probabilities = model.predict(batch.inputs) if batch.inputs else ([], [])
    for index, label, probability in zip(batch.to_score, labels, probabilities, strict=True):
        record = batch.objects[index]
        assert record is not None
        record["prediction"] = label  # parsed here, ours to change; same key order as {**record, ...}
        record["probability"] = round(float(probability), 4)
    return encode_batch(batch.objects, batch.values, messages, batch.errored, max_output_bytes)


@dataclass(frozen=True)
class Refusal:
    """What a model cannot take from a record: the fields added to it instead of a prediction."""

    fields: dict[str, Any]


_MISSING_TEXT = Refusal({"error": MISSING_TEXT})


def _text_or_refusal(record: dict[str, Any]) -> str | Refusal:
    text = text_of(record)
    return _MISSING_TEXT if text is None else text


@dataclass
class Prepared:
    """A batch parsed: the input objects (None where the value is already an error record), the values so far,
    which records are errors, and the inputs of the records to score (`to_score`: their indices)."""

    objects: list[dict[str, Any] | None]
    values: list[bytes]
    errored: set[int]
    to_score: list[int]
    inputs: list[Any]


def prepare(messages: Sequence[bytes | None], extract: Callable[[dict[str, Any]], Any]) -> Prepared:
    """Parses each value; `extract` gives a record's model input, or a Refusal to send out instead."""
    batch = Prepared([], [], set(), [], [])
    for index, value in enumerate(messages):
        parsed = parse(value)
        if isinstance(parsed, bytes):
            batch.objects.append(None)
            batch.values.append(parsed)
            batch.errored.add(index)
            continue
        taken = extract(parsed)
        if isinstance(taken, Refusal):
            parsed = {**parsed, **taken.fields}
            batch.errored.add(index)
        else:
            batch.to_score.append(index)
            batch.inputs.append(taken)
        batch.objects.append(parsed)
        batch.values.append(b"")
    return batch


def encode_batch(objects: Sequence[dict[str, Any] | None], values: list[bytes], messages: Sequence[bytes | None],
                 errored: set[int], max_output_bytes: int = MAX_OUTPUT_BYTES) -> ScoredBatch:
    """Writes each scored (or refused) object into `values`; `None` objects already have their error value.
    An object that cannot be written, or whose output would be too large, becomes an error record too."""
    for index, obj in enumerate(objects):
        if obj is None:
            continue
        value = messages[index] or b""
        try:
            encoded = _dump(obj)
        except (ValueError, RecursionError, TypeError):  # nesting json.loads took but json.dumps will not
            encoded = _dump({"error": INVALID_JSON, "raw": preview(value)})
            errored.add(index)
        if len(encoded) > max_output_bytes:
            encoded = _too_large(value, len(value))
            errored.add(index)
        values[index] = encoded
    return ScoredBatch(values, [index in errored for index in range(len(values))])
