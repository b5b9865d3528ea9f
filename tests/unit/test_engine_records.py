"""Input records to output records: scored, or sent on with an `error`, never a stopped stream."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wml_server.engine.records import MAX_OUTPUT_BYTES, MAX_RECORD_BYTES, RAW_PREVIEW_CHARS, score_batch
from wml_server.models.sentiment import SentimentModel

MODEL = SentimentModel()


class CountingModel:
    """Records what it was asked to score; everything is POSITIVE with probability 0.87654."""

    id = "00000000-0000-4000-8000-000000000000"
    name = description = model_type = runtime_environment = "test"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        self.calls.append(list(texts))
        return ["POSITIVE"] * len(texts), [0.87654] * len(texts)


def out(values: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(v) for v in values]


def test_tweet_and_text_fields_are_scored_and_the_input_kept() -> None:
    batch = score_batch(MODEL, [b'{"tweet": "I love this phone", "id": 7}', b'{"text": "I hate this phone"}'])
    first, second = out(batch.values)
    assert first == {"tweet": "I love this phone", "id": 7, "prediction": "POSITIVE",
                     "probability": first["probability"]}
    assert second["prediction"] == "NEGATIVE"
    assert second["text"] == "I hate this phone"
    assert batch.errored == 0
    for record in (first, second):
        assert 0.5 <= record["probability"] <= 1
        assert record["probability"] == round(record["probability"], 4)


def test_each_record_is_flagged_when_its_value_is_an_error_record() -> None:
    batch = score_batch(MODEL, [b'{"tweet": "fine"}', b"nope", b"[1]", b"{}", None, b'{"text": "ok"}'])
    assert batch.failed == [False, True, True, True, True, False]
    assert batch.failed == ["error" in r for r in out(batch.values)]
    assert batch.errored == 4


def test_one_model_call_per_batch_and_probability_rounded() -> None:
    model = CountingModel()
    batch = score_batch(model, [b'{"tweet": "a"}', b"nope", b'{"text": "b", "tweet": 3}'])
    assert model.calls == [["a", "b"]]  # a non-string tweet falls back to text
    assert [r.get("probability") for r in out(batch.values)] == [0.8765, None, 0.8765]
    assert score_batch(model, []).values == []
    assert model.calls == [["a", "b"]]


def test_invalid_json_goes_on_with_an_error_and_a_preview() -> None:
    batch = score_batch(MODEL, [b'{"tweet": "unterminated', b'{"tweet": NaN}'])
    assert out(batch.values) == [{"error": "invalid_json", "raw": '{"tweet": "unterminated'},
                                 {"error": "invalid_json", "raw": '{"tweet": NaN}'}]
    assert batch.errored == 2


def test_binary_garbage_is_decoded_lossily() -> None:
    garbage = bytes(range(256)) * 4
    (record,) = out(score_batch(MODEL, [garbage]).values)
    assert record["error"] == "invalid_json"
    assert len(record["raw"]) == RAW_PREVIEW_CHARS
    assert "\ufffd" in record["raw"]


def test_a_null_value_is_an_error_record() -> None:
    batch = score_batch(MODEL, [None])
    assert out(batch.values) == [{"error": "invalid_json", "raw": ""}]
    assert batch.errored == 1


@pytest.mark.parametrize("value", [b"[1, 2]", b'"a tweet"', b"42", b"null"])
def test_json_that_is_not_an_object(value: bytes) -> None:
    batch = score_batch(MODEL, [value])
    assert out(batch.values) == [{"error": "not_an_object", "raw": value.decode()}]
    assert batch.errored == 1


@pytest.mark.parametrize("record", [{}, {"tweet": None}, {"tweet": 5, "text": ["x"]}, {"message": "hi"}])
def test_missing_text_keeps_the_input(record: dict[str, Any]) -> None:
    batch = score_batch(MODEL, [json.dumps(record).encode()])
    assert out(batch.values) == [{**record, "error": "missing_text"}]
    assert batch.errored == 1


def test_records_over_one_megabyte_are_errors_within_the_size_limit() -> None:
    big = json.dumps({"tweet": "I love it " * (MAX_RECORD_BYTES // 10)}).encode()
    assert len(big) > MAX_RECORD_BYTES
    batch = score_batch(MODEL, [big, b'{"tweet": "fine"}'])
    large, fine = out(batch.values)
    assert large["error"] == "record_too_large"
    assert large["size"] == len(big)
    assert len(large["raw"]) == RAW_PREVIEW_CHARS
    assert len(batch.values[0]) < 1000
    assert fine["prediction"] == "POSITIVE"
    assert batch.errored == 1


def test_an_output_that_would_outgrow_the_limit_is_an_error() -> None:
    # Just under the input limit: prediction and probability would push the output over it.
    value = json.dumps({"tweet": "x" * (MAX_RECORD_BYTES - 20)}, separators=(",", ":")).encode()
    assert len(value) <= MAX_RECORD_BYTES
    batch = score_batch(MODEL, [value])
    assert len(batch.values[0]) <= MAX_OUTPUT_BYTES
    assert out(batch.values)[0]["error"] == "record_too_large"
    assert batch.errored == 1


def test_unicode_is_kept_as_is() -> None:
    (record,) = out(score_batch(MODEL, ['{"tweet": "J\'adore ce téléphone 😍"}'.encode()]).values)
    assert record["tweet"] == "J'adore ce téléphone 😍"


def test_a_deeply_nested_record_does_not_raise() -> None:
    value = b'{"tweet": "ok", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    (record,) = out(score_batch(MODEL, [value]).values)
    assert record["error"] == "invalid_json"


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**30, 2**63 - 1, -(2**63), 1234567890123456789])
def test_integers_of_any_size_come_out_as_they_went_in(number: int) -> None:
    # Records go through orjson, which turns integers past 64 bits into floats: those must not.
    value = json.dumps({"tweet": "fine", "id": number, "n": [number, {"m": number}]}).encode()
    (record,) = out(score_batch(CountingModel(), [value]).values)
    assert (record["id"], record["n"]) == (number, [number, {"m": number}])
    assert all(type(v) is int for v in (record["id"], record["n"][0], record["n"][1]["m"]))


def test_many_digits_that_are_not_one_long_integer_are_kept() -> None:
    value = json.dumps({"tweet": "1234 5678 9012 3456 7890", "ids": list(range(100)),
                        "x": 0.12345678901234567}).encode()
    (record,) = out(score_batch(CountingModel(), [value]).values)
    assert record["ids"] == list(range(100))
    assert record["x"] == 0.12345678901234567


@given(st.lists(st.one_of(st.binary(max_size=300), st.none(),
                          st.dictionaries(st.sampled_from(["tweet", "text", "id"]),
                                          st.one_of(st.text(max_size=50), st.integers()))
                          .map(lambda d: json.dumps(d).encode())), max_size=20))
def test_any_batch_gives_one_json_object_per_record(values: list[bytes | None]) -> None:
    batch = score_batch(CountingModel(), values)
    assert len(batch.values) == len(values)
    records = out(batch.values)
    assert all(isinstance(r, dict) and (("prediction" in r) != ("error" in r)) for r in records)
    assert batch.errored == sum("error" in r for r in records)
    assert batch.failed == ["error" in r for r in records]
