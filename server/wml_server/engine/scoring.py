"""How a stream scores a batch: with a built-in model in this process, or through a user model's worker.

A user's model is untrusted code: its stream opens a sandboxed worker process of its own when it connects (the
model is loaded there, never here), scores every batch through it, and closes it when the stream ends. A model
that does not load, or a worker that dies, times out or answers nonsense, fails the stream with a reason; the
batch in flight is aborted and read again when the stream is started again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from wml_server.engine.failures import StreamFailure
from wml_server.engine.features import score_features
from wml_server.engine.records import ScoredBatch, score_batch
from wml_server.models.base import Model
from wml_server.models.published import PublishedUserModel
from wml_server.repository.frameworks import SKOPS


class Scorer(Protocol):
    def score(self, values: Sequence[bytes | None]) -> ScoredBatch: ...
    def close(self) -> None: ...


class BuiltinScorer:
    def __init__(self, model: Model) -> None:
        self.model = model

    def score(self, values: Sequence[bytes | None]) -> ScoredBatch:
        return score_batch(self.model, values)

    def close(self) -> None:
        pass


class WorkerScorer:
    """A user's model, loaded in a worker process of this stream's own."""

    def __init__(self, model: PublishedUserModel, deployment_id: str) -> None:
        from wml_server.workers.model_worker import ModelLoadError, ModelWorker

        assert model.schema is not None  # a deployment of a model without one is refused at create
        self.schema = model.schema
        options = model.options
        self.worker = ModelWorker(
            framework="skops" if model.content_format == SKOPS else "scikit-learn", content=model.read_content(),
            fields=model.schema.names, name=f"{model.name[:60]} for deployment {deployment_id}",
            memory_limit_bytes=options.memory_limit_bytes, load_timeout=options.load_timeout,
            predict_timeout=options.predict_timeout, require_sandbox=options.require_sandbox)
        try:
            self.worker.start()
        except ModelLoadError as exc:
            self.worker.close()
            raise StreamFailure(exc.code, f"Model {model.id} (version {model.version_id}) could not be loaded: "
                                          f"{exc.message}") from None

    def _predict(self, features: list[Any]) -> Any:
        from wml_server.workers.model_worker import ModelWorkerDied

        try:
            return self.worker.predict(features)
        except ModelWorkerDied as exc:
            raise StreamFailure(exc.code, f"The model's worker process failed: {exc.message}") from None

    def score(self, values: Sequence[bytes | None]) -> ScoredBatch:
        return score_features(self.schema, self._predict, values)

    def close(self) -> None:
        self.worker.close()


def open_scorer(model: Model | PublishedUserModel, deployment_id: str) -> Scorer:
    """Raises StreamFailure when a user's model cannot be loaded."""
    if isinstance(model, PublishedUserModel):
        return WorkerScorer(model, deployment_id)
    return BuiltinScorer(model)
