"""Published models the service can deploy: what they are (metadata) and how they score (predict)."""

from wml_server.models.base import Model
from wml_server.models.registry import ModelRegistry, default_registry
from wml_server.models.sentiment import SENTIMENT_MODEL_ID, SentimentModel

__all__ = ["SENTIMENT_MODEL_ID", "Model", "ModelRegistry", "SentimentModel", "default_registry"]
