"""What runs in Spark's Python workers for a deployment: scoring with a built-in model, then our sink.

Functions are module-level so Spark pickles them by reference: a worker imports this module (the workers' Python
must have wml-stream-operator installed with its `server` extra) instead of receiving code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from wml_server.spark.sink import write_frames

if TYPE_CHECKING:
    import pandas as pd

    from wml_server.models.base import Model

# One model per Python worker process (Spark reuses its workers across tasks and batches).
_MODELS: dict[str, Model] = {}


def builtin_model(model_id: str) -> Model:
    from wml_server.models.registry import default_registry

    model = _MODELS.get(model_id)
    if model is None:
        model = default_registry().get(model_id)
        if model is None:
            raise LookupError(f"no built-in model {model_id} in this worker's wml-stream-operator")
        _MODELS[model_id] = model
    return model


def score_frames(model_id: str, frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Kafka rows (partition, offset, key, value) -> scored rows (+ failed), the built-in engine's contract."""
    from wml_server.engine.records import score_batch

    model = builtin_model(model_id)
    for frame in frames:
        scored = score_batch(model, list(frame["value"]))
        yield frame.assign(value=scored.values, failed=scored.failed)


def score_and_write(model_id: str, config: dict[str, Any], frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    return write_frames(config, score_frames(model_id, frames))


# A user's model (untrusted code): loaded only in a sandboxed model worker, one per Spark Python worker, as the
# built-in engine does per deployment (wml_server.workers.model_worker).
_USER_WORKERS: dict[str, tuple[Any, Any]] = {}


def _user_worker(model: dict[str, Any]) -> tuple[Any, Any]:
    from pathlib import Path

    from wml_server.repository.schema import parse_schema
    from wml_server.workers.model_worker import ModelWorker

    key = model["path"]
    if key not in _USER_WORKERS:
        schema = parse_schema(model["schema"])
        options = model["options"]
        worker = ModelWorker(framework=model["framework"], content=Path(model["path"]).read_bytes(),
                             fields=schema.names, name=model["name"],
                             memory_limit_bytes=options["memory_limit_bytes"], load_timeout=options["load_timeout"],
                             predict_timeout=options["predict_timeout"], require_sandbox=options["require_sandbox"])
        worker.start()  # ModelLoadError: the task fails with the model's reason, and so does the query
        _USER_WORKERS[key] = (schema, worker)
    return _USER_WORKERS[key]


def score_user_frames(model: dict[str, Any], frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """A user's scikit-learn model: records -> features by name -> its worker, the built-in engine's contract."""
    from wml_server.engine.features import score_features
    from wml_server.workers.model_worker import ModelWorkerDied

    schema, worker = _user_worker(model)
    for frame in frames:
        try:
            # .get: a driver started before versions were named (it outlives the service) has none to give.
            scored = score_features(schema, worker.predict, list(frame["value"]), model_version=model.get("version"))
        except ModelWorkerDied:
            _USER_WORKERS.pop(model["path"], None)  # Spark runs the task again, with a new worker
            worker.close()
            raise
        yield frame.assign(value=scored.values, failed=scored.failed)


def score_user_and_write(model: dict[str, Any], config: dict[str, Any],
                         frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    return write_frames(config, score_user_frames(model, frames))


def finish_mllib(config: dict[str, Any], frames: Iterator[pd.DataFrame], *,
                 version: str | None = None) -> Iterator[pd.DataFrame]:
    """After a PipelineModel's transform: rows (partition, offset, key, value, refused, label, probability) ->
    the output records (the input's fields, `prediction`, `probability`, `model_version`), then our sink."""
    return write_frames(config, _mllib_outputs(frames, version))


def _mllib_outputs(frames: Iterator[pd.DataFrame], version: str | None = None) -> Iterator[pd.DataFrame]:
    """A refused record carries no `model_version`: the pipeline transformed neutral values in its place, so
    no model scored it (as on the built-in engine, engine/features.py)."""
    from wml_server.engine.records import encode_batch, parse

    for frame in frames:
        messages = list(frame["value"])
        objects: list[dict[str, Any] | None] = []
        values: list[bytes] = []
        errored: set[int] = set()
        for index, (value, refused, label, probability) in enumerate(
                zip(messages, frame["refused"], frame["label"], frame["probability"], strict=True)):
            parsed = parse(value)
            if isinstance(parsed, bytes):  # not JSON, not an object: already its error record
                objects.append(None)
                values.append(parsed)
                errored.add(index)
                continue
            if refused is not None:
                import orjson

                parsed = {**parsed, **orjson.loads(refused)}
                errored.add(index)
            else:
                parsed["prediction"] = _plain(label)
                if probability is not None:
                    parsed["probability"] = round(float(probability), 4)
                if version is not None:
                    parsed["model_version"] = version
            objects.append(parsed)
            values.append(b"")
        scored = encode_batch(objects, values, messages, errored)
        yield frame[["partition", "offset", "key"]].assign(value=scored.values, failed=scored.failed)


def _plain(label: Any) -> Any:
    """A label as JSON wants it: a whole double (MLlib's numeric prediction) as an int, numpy scalars as Python's."""
    if hasattr(label, "item"):
        label = label.item()
    if isinstance(label, float) and label.is_integer():
        return int(label)
    return label


def prepare_mllib(fields: list[dict[str, Any]], frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Before a PipelineModel's transform: each record's features as typed columns, or `refused` (the JSON of
    the fields its error record adds) with neutral values the model can still transform."""
    import orjson

    from wml_server.engine.records import parse
    from wml_server.repository.schema import accepts

    for frame in frames:
        columns: dict[str, list[Any]] = {f["name"]: [] for f in fields}
        refused: list[bytes | None] = []
        for value in frame["value"]:
            parsed = parse(value)
            why: dict[str, Any] | None = None
            if isinstance(parsed, bytes):
                why = {"error": "invalid_record"}  # replaced by the record's own error in _mllib_outputs
                parsed = {}
            else:
                for f in fields:
                    got = parsed.get(f["name"])
                    if got is None:
                        why = {"error": "missing_feature", "field": f["name"]}
                        break
                    if not accepts(f["type"], got):
                        why = {"error": "wrong_type", "field": f["name"], "expected": f["type"]}
                        break
            for f in fields:
                columns[f["name"]].append(_neutral(f["type"]) if why is not None else parsed[f["name"]])
            refused.append(orjson.dumps(why) if why is not None else None)
        yield frame.assign(refused=refused, **columns)


def _neutral(kind: str) -> Any:
    return "" if kind == "string" else (False if kind == "boolean" else 0)
