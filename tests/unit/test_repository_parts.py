"""The repository's pure parts: input schemas, content formats (read, never run), and mapping records to features."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wml_server.engine.features import features_of, score_features
from wml_server.engine.records import Refusal
from wml_server.repository.frameworks import (
    MLLIB_TAR,
    PICKLE,
    PICKLE_TAR,
    SKOPS,
    ContentError,
    content_format,
    framework_of,
)
from wml_server.repository.schema import SchemaError, declared_schema, parse_schema

pytestmark = pytest.mark.unit
TWEET = parse_schema({"type": "struct", "fields": [{"name": "tweet", "type": "string"}]})
ROWS = parse_schema({"fields": [{"name": "size", "type": "double"}, {"name": "rooms", "type": "long"},
                                {"name": "new", "type": "boolean"}]})


@pytest.mark.parametrize(("raw", "message"), [
    ("tweet:string", "must be an object"),
    ({"type": "array"}, "must be \"struct\""),
    ({"fields": []}, "non-empty list"),
    ({"fields": [{"type": "string"}]}, "fields[0].name"),
    ({"fields": [{"name": "a", "type": "string"}, {"name": "a", "type": "long"}]}, "appears twice"),
    ({"fields": [{"name": "a", "type": "map<string,int>"}]}, "is not supported"),
    ({"fields": ["a"]}, "fields[0] must be an object"),
])
def test_a_schema_that_does_not_parse_says_where(raw: Any, message: str) -> None:
    with pytest.raises(SchemaError, match=None) as err:
        parse_schema(raw)
    assert message in str(err.value)


def test_types_are_spark_s_and_numpy_s_names() -> None:
    schema = parse_schema({"fields": [{"name": n, "type": t} for n, t in
                                      [("a", "string"), ("b", "long"), ("c", "float64"), ("d", "bool"),
                                       ("e", "Integer"), ("f", "str")]]})
    assert [f.type for f in schema.fields] == ["string", "integer", "double", "boolean", "integer", "string"]
    assert TWEET.one_text
    assert not ROWS.one_text


def test_the_v3_client_s_training_data_schema_declares_the_features() -> None:
    meta = {"training_data_schema": {"features": {"type": "list", "fields": [{"name": "text", "type": "str"}]},
                                     "labels": {"type": "ndarray", "fields": [{"name": "label", "type": "str"}]}}}
    assert parse_schema(declared_schema(meta)).names == ["text"]
    assert declared_schema({"input_data_schema": {"fields": []}, **meta}) == {"fields": []}
    assert declared_schema({}) is None


@pytest.mark.parametrize(("record", "expected"), [
    ({"size": 1.5, "rooms": 2, "new": False}, [1.5, 2, False]),
    ({"size": 2, "rooms": 2, "new": True, "other": "x"}, [2, 2, True]),  # an integer is a double too
    ({"rooms": 2, "new": True}, {"error": "missing_feature", "field": "size"}),
    ({"size": None, "rooms": 2, "new": True}, {"error": "missing_feature", "field": "size"}),
    ({"size": 1.0, "rooms": True, "new": True}, {"error": "wrong_type", "field": "rooms", "expected": "integer"}),
    ({"size": 1.0, "rooms": 2.0, "new": True}, {"error": "wrong_type", "field": "rooms", "expected": "integer"}),
    ({"size": "1", "rooms": 2, "new": True}, {"error": "wrong_type", "field": "size", "expected": "double"}),
    ({"size": 1.0, "rooms": 2, "new": 1}, {"error": "wrong_type", "field": "new", "expected": "boolean"}),
])
def test_a_record_s_fields_become_features_by_name_and_type(record: dict[str, Any], expected: Any) -> None:
    taken = features_of(ROWS, record)
    assert (taken.fields if isinstance(taken, Refusal) else taken) == expected


@dataclass
class Answer:
    labels: list[Any]
    probabilities: list[float | None]
    errors: list[str | None]


def test_scoring_keeps_the_record_adds_the_prediction_and_flags_what_it_could_not_score() -> None:
    asked: list[list[Any]] = []

    def predict(features: list[Any]) -> Answer:
        asked.append(features)
        return Answer(["POSITIVE", None, 7], [0.91234, None, float("nan")], [None, "ValueError: no", None])

    messages = [json.dumps({"id": 1, "tweet": "good"}).encode(), json.dumps({"tweet": "raises"}).encode(),
                json.dumps({"tweet": "seven"}).encode(), json.dumps({"text": "no tweet"}).encode(), b"\xff"]
    batch = score_features(TWEET, predict, messages)
    assert asked == [["good", "raises", "seven"]]  # one round trip; one text feature: a list of strings
    out = [json.loads(v) for v in batch.values]
    assert out[0] == {"id": 1, "tweet": "good", "prediction": "POSITIVE", "probability": 0.9123}
    assert out[1] == {"tweet": "raises", "error": "model_error", "message": "ValueError: no"}
    assert out[2] == {"tweet": "seven", "prediction": 7}  # no probability when it is not a number
    assert out[3] == {"text": "no tweet", "error": "missing_feature", "field": "tweet"}
    assert out[4]["error"] == "invalid_json"
    assert batch.failed == [False, True, False, True, True]


def test_records_a_model_ran_on_name_its_version_and_refused_ones_do_not() -> None:
    def predict(features: list[Any]) -> Answer:
        return Answer(["POSITIVE", None], [0.5, None], [None, "ValueError: no"])

    messages = [json.dumps({"tweet": "good"}).encode(), json.dumps({"tweet": "raises"}).encode(),
                json.dumps({"text": "no tweet"}).encode(), b"[]", b"\xff"]
    batch = score_features(TWEET, predict, messages, model_version="v-1")
    out = [json.loads(v) for v in batch.values]
    assert out[0] == {"tweet": "good", "prediction": "POSITIVE", "probability": 0.5, "model_version": "v-1"}
    assert list(out[0]) == ["tweet", "prediction", "probability", "model_version"]  # next to the prediction
    assert out[1] == {"tweet": "raises", "error": "model_error", "message": "ValueError: no", "model_version": "v-1"}
    assert out[2] == {"text": "no tweet", "error": "missing_feature", "field": "tweet"}  # no model saw it
    assert out[3] == {"error": "not_an_object", "raw": "[]"}
    assert "model_version" not in out[4]
    assert batch.failed == [False, True, True, True, True]


def test_an_output_too_large_once_scored_is_an_error_record_without_a_version() -> None:
    def predict(features: list[Any]) -> Answer:
        return Answer(["POSITIVE"], [0.5], [None])

    message = json.dumps({"tweet": "x" * 100}).encode()
    batch = score_features(TWEET, predict, [message], model_version="v-1", max_output_bytes=len(message) + 20)
    assert json.loads(batch.values[0])["error"] == "record_too_large"
    assert "model_version" not in json.loads(batch.values[0])
    assert batch.failed == [True]


def test_a_batch_with_nothing_to_score_asks_the_model_nothing() -> None:
    def predict(features: list[Any]) -> Answer:
        raise AssertionError("not called")

    batch = score_features(TWEET, predict, [b"[]", b'{"tweet": 1}'])
    assert batch.failed == [True, True]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def targz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


SKLEARN = framework_of("scikit-learn", None)
MLLIB = framework_of("mllib", "3.5")


def test_formats_are_recognised_from_their_bytes(tmp_path: Path) -> None:
    import skops.io
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    assert content_format(SKLEARN, write(tmp_path, "a", pickle.dumps(model))) == PICKLE
    assert content_format(SKLEARN, write(tmp_path, "b", targz({"./scikit_model.pkl": pickle.dumps(model)}))) \
        == PICKLE_TAR
    assert content_format(SKLEARN, write(tmp_path, "c", skops.io.dumps(model))) == SKOPS
    metadata = b'{"class":"org.apache.spark.ml.PipelineModel"}\n'
    assert content_format(MLLIB, write(tmp_path, "d", targz({"m/metadata/part-00000": metadata}))) == MLLIB_TAR
    spark4 = {"m/metadata/_SUCCESS": b"", "m/metadata/part-00000-3a-c000.txt": metadata,
              "m/stages/0_tok/metadata/part-00000-4b-c000.txt": b'{"class":"x"}'}
    assert content_format(MLLIB, write(tmp_path, "e", targz(spark4))) == MLLIB_TAR
    assert SKLEARN.model_type.startswith("scikit-learn-")
    assert MLLIB.model_type == "mllib-3.5"


@pytest.mark.parametrize(("kind", "data", "code", "words"), [
    (SKLEARN, b"", "invalid_model_content", "empty"),
    (SKLEARN, b"hello", "invalid_model_content", "not a scikit-learn model"),
    (SKLEARN, targz({"a.pkl": pickle.dumps(1), "b.pkl": pickle.dumps(2)}), "invalid_model_content", "exactly one"),
    (SKLEARN, targz({"model.txt": b"x"}), "invalid_model_content", "exactly one"),
    (SKLEARN, targz({"../evil.pkl": pickle.dumps(1)}), "invalid_model_content", "leaves it"),
    (SKLEARN, targz({"m.pkl": b"not a pickle"}), "invalid_model_content", "not a pickle"),
    (SKLEARN, b"\x1f\x8b\x08 truncated", "invalid_model_content", "tar.gz"),
    (SKLEARN, b"PK\x03\x04 no zip", "invalid_model_content", "corrupt"),
    (MLLIB, targz({"m/metadata/part-00000": b'{"class":"org.apache.spark.ml.classification.LogisticRegressionModel"}'}),
     "invalid_model_content", "not an org.apache.spark.ml.PipelineModel"),
    (MLLIB, targz({"m/stages/x": b""}), "invalid_model_content", "no metadata/part-00000"),
    (MLLIB, pickle.dumps(1), "invalid_model_content", "tar.gz"),
])
def test_content_that_is_not_what_its_framework_takes_is_refused_saying_why(
        tmp_path: Path, kind: Any, data: bytes, code: str, words: str) -> None:
    with pytest.raises(ContentError) as err:
        content_format(kind, write(tmp_path, "x", data))
    assert err.value.code == code
    assert words in err.value.message


def test_a_skops_file_with_an_untrusted_type_is_refused_unloaded(tmp_path: Path) -> None:
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    data = skops.io.dumps(FunctionTransformer(func=json.loads))
    with pytest.raises(ContentError) as err:
        content_format(SKLEARN, write(tmp_path, "x", data))
    assert err.value.code == "untrusted_types"
    assert "json.loads" in err.value.message


def test_unknown_frameworks_are_refused() -> None:
    with pytest.raises(ContentError) as err:
        framework_of("tensorflow", "1.5")
    assert err.value.code == "unsupported_framework"
    assert framework_of("sklearn", "0.19").model_type == "scikit-learn-0.19"
