"""Scoring records with a user's model: a record's JSON fields, mapped to the model's features by name.

The output contract is the built-in models' (records.py): the input's fields plus `prediction` and, when the
model gives one, `probability`; then `model_version`, the repository version that scored the record (a
deployment is pinned to one), so a reader of the topic sees a new version's records begin. A record the model
cannot take is not scored; it goes out with an `error`:
- `missing_feature`: a field of the input schema is absent or null (`field` names it);
- `wrong_type`: a field has another JSON type than the schema's (`field`, `expected`);
- `model_error`: the model raised on this record (`message`: the exception's type and first words; and
  `model_version`: that version ran on it and raised, which a reader looking at a new version needs to see);
and the codes of records.py for input that is not a JSON object at all. Those, and the refusals above, carry
no `model_version`: no model ever saw them, and the version would tell a reader nothing about why they failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from wml_server.engine.records import MAX_OUTPUT_BYTES, Refusal, ScoredBatch, encode_batch, prepare
from wml_server.repository.schema import InputSchema, accepts

MISSING_FEATURE = "missing_feature"
WRONG_TYPE = "wrong_type"
MODEL_ERROR = "model_error"


class Predicted(Protocol):
    """What a worker answers (wml_server.workers.model_worker.Prediction)."""

    @property
    def labels(self) -> Sequence[Any]: ...

    @property
    def probabilities(self) -> Sequence[float | None]: ...

    @property
    def errors(self) -> Sequence[str | None]: ...


def features_of(schema: InputSchema, record: dict[str, Any]) -> Any:
    """The record's features in the schema's order (one text: the string itself), or the Refusal to send."""
    values = []
    for field in schema.fields:
        value = record.get(field.name)
        if value is None:
            return Refusal({"error": MISSING_FEATURE, "field": field.name})
        if not accepts(field.type, value):
            return Refusal({"error": WRONG_TYPE, "field": field.name, "expected": field.type})
        values.append(value)
    return values[0] if schema.one_text else values


def _label(value: Any) -> Any:
    # JSON's types only: anything else a worker sent would not survive the output's encoding.
    if isinstance(value, str | bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def score_features(schema: InputSchema, predict: Callable[[list[Any]], Predicted],
                   messages: Sequence[bytes | None], *, model_version: str | None = None,
                   max_output_bytes: int = MAX_OUTPUT_BYTES) -> ScoredBatch:
    """Scores a batch with one `predict` call (a worker round trip). Raises only what `predict` raises when
    the worker itself fails (the stream fails then, and the batch is read again after a restart).
    `model_version` (None: no field) goes into each record the model ran on."""
    batch = prepare(messages, lambda record: features_of(schema, record))
    objects, errored = batch.objects, batch.errored
    if batch.inputs:
        answer = predict(batch.inputs)
        for index, label, probability, error in zip(batch.to_score, answer.labels, answer.probabilities, answer.errors,
                                                    strict=True):
            record = objects[index]
            assert record is not None
            if error is not None:
                record["error"] = MODEL_ERROR
                record["message"] = str(error)[:300]
                if model_version is not None:
                    record["model_version"] = model_version
                errored.add(index)
                continue
            record["prediction"] = _label(label)
            if probability is not None and math.isfinite(probability):
                record["probability"] = round(float(probability), 4)
            if model_version is not None:  # one key in a dict the batch parsed anyway: no cost worth a switch
                record["model_version"] = model_version

    return encode_batch(objects, batch.values, messages, errored, max_output_bytes)
