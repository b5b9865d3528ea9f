"""The published models a service offers, by id; each is built on first use and then kept."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from wml_server.models.base import Model
from wml_server.models.sentiment import SENTIMENT_MODEL_ID, SentimentModel
from wml_server.models.sentiment3 import SENTIMENT3_MODEL_ID, Sentiment3Model


class ModelRegistry:
    """Models by id. Factories run at most once, on the first `get` or `all`, under a lock."""

    def __init__(self, factories: Mapping[str, Callable[[], Model]]) -> None:
        self._factories = dict(factories)
        self._models: dict[str, Model] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, *models: Model) -> ModelRegistry:
        """A registry of models that are already built (tests, tools)."""
        return cls({m.id: _built(m) for m in models})

    def ids(self) -> list[str]:
        return list(self._factories)

    def get(self, model_id: str) -> Model | None:
        """The model, or None when no model has that id."""
        if model_id not in self._factories:
            return None
        with self._lock:
            model = self._models.get(model_id)
            if model is None:
                model = self._factories[model_id]()
                if model.id != model_id:
                    raise ValueError(f"the factory registered as {model_id} built model {model.id}")
                self._models[model_id] = model
            return model

    def all(self) -> list[Model]:
        """Every model, in registration order."""
        return [m for m in (self.get(i) for i in self._factories) if m is not None]


def _built(model: Model) -> Callable[[], Model]:
    return lambda: model


def default_registry() -> ModelRegistry:
    """A new registry of the models this service ships: VADER sentiment, in two and in three classes."""
    return ModelRegistry({SENTIMENT_MODEL_ID: SentimentModel, SENTIMENT3_MODEL_ID: Sentiment3Model})
