"""The sample model "Sentiment Prediction": VADER, a lexicon and rule based scorer tuned for social media."""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable, Sequence
from importlib import metadata

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# Clients keep model ids in manifests: this one must never change.
SENTIMENT_MODEL_ID = "3b1f3d7e-5c1a-4d8e-9b7a-6f0e2c9d4a11"

POSITIVE = "POSITIVE"
NEGATIVE = "NEGATIVE"


def _vader_version() -> str:
    try:
        return metadata.version("vaderSentiment")
    except metadata.PackageNotFoundError:  # pragma: no cover - only when run from a source tree
        return "unknown"


def label_and_probability(compound: float) -> tuple[str, float]:
    """Turns VADER's compound score (-1..1) into a label and the probability of that label.

    compound >= 0 is POSITIVE, below is NEGATIVE (VADER's own neutral band is folded into POSITIVE so that
    every tweet gets one of the two labels the product promises). With p_positive = (compound + 1) / 2 the
    probability is p_positive for POSITIVE and 1 - p_positive for NEGATIVE, so it is always >= 0.5 and grows
    with the strength of the sentiment. It is a monotonic mapping of the compound score onto [0, 1], not a
    calibrated probability: nothing was fitted to make "0.8" mean "right 80 % of the time".
    """
    compound = max(-1.0, min(1.0, compound))
    p_positive = (compound + 1.0) / 2.0
    if compound >= 0:
        return POSITIVE, p_positive
    return NEGATIVE, 1.0 - p_positive


@functools.cache
def vader() -> SentimentIntensityAnalyzer:
    """The one analyzer of the process. Loading the lexicons takes tens of milliseconds; polarity_scores only
    reads them, so every model and every stream thread can share it."""
    return SentimentIntensityAnalyzer()


class SentimentModel:
    """Scores English short texts (tweets) POSITIVE or NEGATIVE with VADER. A model that labels VADER's
    compound score otherwise subclasses this and replaces `label` (and its metadata)."""

    id = SENTIMENT_MODEL_ID
    name = "Sentiment Prediction"
    description = ("Scores tweets POSITIVE or NEGATIVE with VADER (Hutto and Gilbert, 2014), a lexicon and "
                   "rule based model tuned for social media text. probability is the probability of the "
                   "predicted label, a monotonic mapping of VADER's compound score, not a calibrated one.")
    model_type = "vader-sentiment"
    label: Callable[[float], tuple[str, float]] = staticmethod(label_and_probability)

    def __init__(self) -> None:
        self._analyzer = vader()
        self.runtime_environment = f"python-{platform.python_version()} vaderSentiment-{_vader_version()}"

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        labels: list[str] = []
        probabilities: list[float] = []
        for text in texts:
            label, probability = self.label(float(self._analyzer.polarity_scores(text)["compound"]))
            labels.append(label)
            probabilities.append(probability)
        return labels, probabilities
