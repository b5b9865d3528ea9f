"""Published models the service can deploy: what they are (metadata) and how they score (predict)."""

from wml_server.models.base import Model
from wml_server.models.registry import ModelRegistry, default_registry
from wml_server.models.sentiment import SENTIMENT_MODEL_ID, SentimentModel
from wml_server.models.sentiment3 import SENTIMENT3_MODEL_ID, Sentiment3Model

__all__ = ["SENTIMENT3_MODEL_ID", "SENTIMENT_MODEL_ID", "Model", "ModelRegistry", "Sentiment3Model", "SentimentModel",
           "default_registry"]
