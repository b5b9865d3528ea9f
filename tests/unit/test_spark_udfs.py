"""What Spark's Python workers make of a user's model's rows (spark/udfs.py), without Spark: the output records
name the deployment's model version, as on the built-in engine; refused records do not."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson
import pandas as pd
import pytest

from wml_server.spark import udfs

pytestmark = pytest.mark.unit


def kafka_rows(values: list[bytes]) -> pd.DataFrame:
    return pd.DataFrame({"partition": [0] * len(values), "offset": list(range(len(values))),
                         "key": [b"k"] * len(values), "value": values})


def test_an_mllib_pipeline_s_records_name_the_version_and_refused_ones_do_not() -> None:
    frame = kafka_rows([b'{"tweet": "good"}', b'{"text": "no tweet"}', b"\xff"]).assign(
        refused=[None, orjson.dumps({"error": "missing_feature", "field": "tweet"}), b'{"error": "invalid_record"}'],
        label=[1.0, 0.0, 0.0], probability=[0.91234, 0.5, 0.5])
    out = next(udfs._mllib_outputs(iter([frame]), "v-1"))
    records = [json.loads(v) for v in out["value"]]
    assert records[0] == {"tweet": "good", "prediction": 1, "probability": 0.9123, "model_version": "v-1"}
    assert records[1] == {"text": "no tweet", "error": "missing_feature", "field": "tweet"}
    assert records[2]["error"] == "invalid_json"
    assert "model_version" not in records[2]
    assert list(out["failed"]) == [False, True, True]


def test_an_mllib_driver_without_a_version_writes_what_it_wrote_before() -> None:
    frame = kafka_rows([b'{"tweet": "good"}']).assign(refused=[None], label=["POSITIVE"], probability=[None])
    out = next(udfs._mllib_outputs(iter([frame])))
    assert json.loads(out["value"][0]) == {"tweet": "good", "prediction": "POSITIVE"}


@dataclass
class Answer:
    labels: list[Any]
    probabilities: list[float | None]
    errors: list[str | None]


class FakeWorker:
    """Stands in for the sandboxed model worker a Spark Python worker would open."""

    def predict(self, features: list[Any]) -> Answer:
        return Answer(["POSITIVE"] * len(features), [0.75] * len(features), [None] * len(features))

    def close(self) -> None:
        pass


@pytest.fixture
def user_model(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from wml_server.repository.schema import parse_schema

    model = {"path": "/nowhere/model.bin", "version": "v-2"}
    schema = parse_schema({"type": "struct", "fields": [{"name": "tweet", "type": "string"}]})
    monkeypatch.setitem(udfs._USER_WORKERS, model["path"], (schema, FakeWorker()))
    return model


def test_a_scikit_learn_model_s_records_on_spark_name_the_version(user_model: dict[str, Any]) -> None:
    out = next(udfs.score_user_frames(user_model, iter([kafka_rows([b'{"tweet": "good"}', b'{"text": "x"}'])])))
    records = [json.loads(v) for v in out["value"]]
    assert records[0] == {"tweet": "good", "prediction": "POSITIVE", "probability": 0.75, "model_version": "v-2"}
    assert records[1] == {"text": "x", "error": "missing_feature", "field": "tweet"}
    assert list(out["failed"]) == [False, True]
