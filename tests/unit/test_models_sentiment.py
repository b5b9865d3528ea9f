"""The sample model: VADER labels, probabilities consistent with them, stable metadata."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wml_server.models import (
    SENTIMENT3_MODEL_ID,
    SENTIMENT_MODEL_ID,
    Model,
    ModelRegistry,
    Sentiment3Model,
    SentimentModel,
    default_registry,
)
from wml_server.models.sentiment import label_and_probability
from wml_server.models.sentiment3 import label_and_probability_3

MODEL = SentimentModel()


@pytest.mark.parametrize("tweet", [
    "I love this phone, it's amazing!",
    "Best concert ever :) so happy right now",
    "What a great day with friends #blessed",
])
def test_obvious_positive_tweets(tweet: str) -> None:
    labels, probabilities = MODEL.predict([tweet])
    assert labels == ["POSITIVE"]
    assert probabilities[0] > 0.75


@pytest.mark.parametrize("tweet", [
    "This is the worst service ever. I hate it.",
    "Terrible, awful, broken again :(",
    "So sad and angry about this horrible news",
])
def test_obvious_negative_tweets(tweet: str) -> None:
    labels, probabilities = MODEL.predict([tweet])
    assert labels == ["NEGATIVE"]
    assert probabilities[0] > 0.75


def test_a_batch_keeps_its_order_and_empty_text_is_neutral_positive() -> None:
    labels, probabilities = MODEL.predict(["I hate it", "", "I love it"])
    assert labels == ["NEGATIVE", "POSITIVE", "POSITIVE"]
    assert probabilities[1] == 0.5
    assert MODEL.predict([]) == ([], [])


@given(st.floats(min_value=-1.0, max_value=1.0))
def test_probability_is_that_of_the_label(compound: float) -> None:
    label, probability = label_and_probability(compound)
    assert 0.5 <= probability <= 1.0
    assert label == ("POSITIVE" if compound >= 0 else "NEGATIVE")
    p_positive = (compound + 1) / 2
    assert probability == pytest.approx(p_positive if label == "POSITIVE" else 1 - p_positive)


@given(st.text(max_size=280))
def test_any_text_gets_a_label_and_a_probability_in_range(text: str) -> None:
    (label,), (probability,) = MODEL.predict([text])
    assert label in ("POSITIVE", "NEGATIVE")
    assert 0.5 <= probability <= 1.0


def test_metadata_is_stable_and_honest() -> None:
    assert SENTIMENT_MODEL_ID == "3b1f3d7e-5c1a-4d8e-9b7a-6f0e2c9d4a11"
    assert str(uuid.UUID(MODEL.id)) == MODEL.id == SENTIMENT_MODEL_ID
    assert MODEL.name == "Sentiment Prediction"
    assert "vaderSentiment-3.3.2" in MODEL.runtime_environment
    assert "python-3." in MODEL.runtime_environment
    assert isinstance(MODEL, Model)


def test_registry_builds_each_model_once_and_only_when_asked() -> None:
    built: list[int] = []

    def factory() -> Model:
        built.append(1)
        return MODEL

    registry = ModelRegistry({SENTIMENT_MODEL_ID: factory})
    assert built == []
    assert registry.ids() == [SENTIMENT_MODEL_ID]
    assert registry.get(SENTIMENT_MODEL_ID) is MODEL
    assert registry.all() == [MODEL]
    assert built == [1]
    assert registry.get(str(uuid.uuid4())) is None


def test_default_registry_offers_both_sentiment_models() -> None:
    registry = default_registry()
    model = registry.get(SENTIMENT_MODEL_ID)
    three = registry.get(SENTIMENT3_MODEL_ID)
    assert isinstance(model, SentimentModel)
    assert isinstance(three, Sentiment3Model)
    assert registry.all() == [model, three]
    assert ModelRegistry.of(MODEL).get(SENTIMENT_MODEL_ID) is MODEL


# "Sentiment Prediction (3 classes)"

THREE = Sentiment3Model()


def test_three_classes_metadata_is_stable() -> None:
    assert SENTIMENT3_MODEL_ID == "8d2c6b1e-4f7a-4c39-a5e0-71b9d3f2c846"
    assert str(uuid.UUID(THREE.id)) == THREE.id != SENTIMENT_MODEL_ID
    assert THREE.name == "Sentiment Prediction (3 classes)"
    assert isinstance(THREE, Model)


def test_three_classes_use_vaders_recommended_thresholds() -> None:
    labels, probabilities = THREE.predict(["I love it", "", "I hate it", "The bus leaves at noon."])
    assert labels == ["POSITIVE", "NEUTRAL", "NEGATIVE", "NEUTRAL"]
    assert probabilities[1] == 1.0
    assert label_and_probability_3(0.05) == ("POSITIVE", pytest.approx(0.525))
    assert label_and_probability_3(-0.05) == ("NEGATIVE", pytest.approx(0.525))
    assert label_and_probability_3(0.0499)[0] == "NEUTRAL"


@given(st.floats(min_value=-1.0, max_value=1.0))
def test_three_classes_probability_is_that_of_the_label(compound: float) -> None:
    label, probability = label_and_probability_3(compound)
    assert 0.5 <= probability <= 1.0
    assert label == ("POSITIVE" if compound >= 0.05 else "NEGATIVE" if compound <= -0.05 else "NEUTRAL")
