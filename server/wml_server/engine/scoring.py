"""How a stream scores a batch: a built-in model in worker processes (one per core, each taking whole
parts of each batch) or in this process, or through a user model's sandboxed worker.

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
from wml_server.engine.process_scorer import ProcessScorer, WorkerLost
from wml_server.engine.records import ScoredBatch, score_batch
from wml_server.models.base import Model
from wml_server.models.published import PublishedUserModel
from wml_server.models.sentiment import SENTIMENT_MODEL_ID, SentimentModel
from wml_server.models.sentiment3 import SENTIMENT3_MODEL_ID, Sentiment3Model
from wml_server.repository.frameworks import SKOPS

# Fewer records than this per worker cost more in round trips than they save (a caught-up stream's batches).
MIN_PART = 64

# The models a scoring worker can build by id (engine/score_worker.py): the service's own. A model object of
# another class (a test's) is scored in this process.
_WORKER_MODELS: dict[str, type] = {SENTIMENT_MODEL_ID: SentimentModel, SENTIMENT3_MODEL_ID: Sentiment3Model}


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
        self.version = model.version_id  # the deployment's pinned version: the content loaded below is its own
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
        return score_features(self.schema, self._predict, values, model_version=self.version)

    def close(self) -> None:
        self.worker.close()


def open_scorer(model: Model | PublishedUserModel, deployment_id: str) -> Scorer:
    """Raises StreamFailure when a user's model cannot be loaded."""
    if isinstance(model, PublishedUserModel):
        return WorkerScorer(model, deployment_id)
    return BuiltinScorer(model)


def runs_in_workers(model: Model | PublishedUserModel) -> bool:
    return not isinstance(model, PublishedUserModel) and _WORKER_MODELS.get(model.id) is type(model)


def open_process_scorers(model: Model | PublishedUserModel, deployment_id: str, count: int,
                         timeout: float = 60.0) -> list[ProcessScorer]:
    """`count` scoring workers of a built-in model, started at once. Raises WorkerLost when one cannot start."""
    scorers = [ProcessScorer(model.id, f"deployment {deployment_id} (worker {k + 1} of {count})")
               for k in range(count)]
    try:
        for scorer in scorers:
            scorer.spawn()
        for scorer in scorers:
            scorer.wait_ready(timeout)
    except BaseException:
        for scorer in scorers:
            scorer.close()
        raise
    return scorers


class Lanes:
    """A stream's scorers. Worker processes each take a contiguous part of a batch and score at once; the
    stream produces the parts back in the batch's order, so each partition keeps its order. Not a partition per
    worker: librdkafka hands out a batch from one partition at a time (a fetch brings up to 1 MB of each), so
    such a split left all but one worker idle, and a topic with one partition could never use two cores."""

    def __init__(self, scorers: Sequence[Scorer | ProcessScorer], min_part: int = MIN_PART,
                 local: Scorer | None = None) -> None:
        self.scorers = list(scorers)
        self.concurrent = all(isinstance(s, ProcessScorer) for s in self.scorers)
        self.min_part = min_part
        self.local = local

    def score(self, values: Sequence[bytes | None]) -> ScoredBatch:
        if self.local is not None and len(values) < self.min_part:
            # A caught-up stream's few records (~1 ms of VADER): a round trip to a worker, and another process for
            # the kernel to schedule on a busy machine, would only add to their latency.
            return self.local.score(values)
        count = min(len(self.scorers), max(1, -(-len(values) // self.min_part)))
        if count == 1 or not self.concurrent:
            return self.scorers[0].score(values)
        size = -(-len(values) // count)
        bounds = [(start, min(start + size, len(values))) for start in range(0, len(values), size)]
        workers = [_process(s) for s in self.scorers[:len(bounds)]]
        for worker, (start, end) in zip(workers, bounds, strict=True):
            worker.send(values[start:end])
        parts = [worker.receive() for worker in workers]
        return ScoredBatch([v for part in parts for v in part.values], [f for part in parts for f in part.failed])

    def lost(self) -> str | None:
        """How a worker process ended, if one has: an idle worker's death is seen by no batch."""
        for scorer in self.scorers:
            if isinstance(scorer, ProcessScorer) and (why := scorer.ended()) is not None:
                return why
        return None

    def pids(self) -> list[int]:
        return [p for s in self.scorers if isinstance(s, ProcessScorer) and (p := s.pid) is not None]

    def close(self) -> None:
        for scorer in self.scorers:
            scorer.close()


def _process(scorer: Scorer | ProcessScorer) -> ProcessScorer:
    assert isinstance(scorer, ProcessScorer)
    return scorer


__all__ = ["BuiltinScorer", "Lanes", "Scorer", "WorkerLost", "WorkerScorer", "open_process_scorers", "open_scorer",
           "runs_in_workers"]
