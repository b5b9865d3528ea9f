"""The sample scikit-learn model (wml_localplatform.sample_models) for bench/spark_throughput.py --models sklearn.

Trained here on the fixed split's training side (a few seconds), saved as the v3 clients uploaded pipelines (a
.tar.gz of one joblib pickle), and handed to SparkEngine as the service hands a published scikit-learn model
(streams.StreamController._spark_model): each Spark Python worker loads it in a sandboxed model worker of its
own. Its model-only rate is predict() in batches in this process, on one core.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wml_localplatform import sample_models
from wml_server.models.published import WorkerOptions
from wml_server.repository.schema import InputSchema, parse_schema


def sklearn_model(folder: Path) -> tuple[Any, dict[str, Any]]:
    """(the fitted pipeline, the Spark model dict of its .tar.gz)."""
    pipeline = sample_models.train_sklearn()
    path = sample_models.save_pickle_targz(pipeline, folder / "sklearn" / "model.tar.gz")
    schema: InputSchema = parse_schema({"type": "struct", "fields": [
        {"name": sample_models.INPUT_FIELD, "type": "string", "nullable": False, "metadata": {}}]})
    return pipeline, {"kind": "user", "framework": "scikit-learn", "path": str(path), "schema": schema.to_json(),
                      "name": "bench sample scikit-learn model", "options": asdict(WorkerOptions())}


def sklearn_rates(pipeline: Any, payloads: list[bytes], batch: int) -> tuple[float, float, list[str]]:
    """(predict() records/s, the same, labels): the model alone on one core, in batches of `batch`."""
    texts = [json.loads(v)[sample_models.INPUT_FIELD] for v in payloads]
    labels: list[str] = []
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        labels += [str(p) for p in pipeline.predict(texts[i:i + batch])]
    rate = len(texts) / (time.perf_counter() - started)
    return rate, rate, labels
