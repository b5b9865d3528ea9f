"""The sample model "Sentiment Prediction (3 classes)": VADER with the neutral band its authors recommend.

A second built-in model, so that a deployment can be moved from one model to another (the operator's tests
change `modelId`). Same analyzer as "Sentiment Prediction" (sentiment.py), other labels.
"""

from __future__ import annotations

from wml_server.models.sentiment import NEGATIVE, POSITIVE, SentimentModel

# Clients keep model ids in manifests: this one must never change.
SENTIMENT3_MODEL_ID = "8d2c6b1e-4f7a-4c39-a5e0-71b9d3f2c846"

NEUTRAL = "NEUTRAL"
# VADER's README: compound >= 0.05 positive, <= -0.05 negative, in between neutral.
THRESHOLD = 0.05


def label_and_probability_3(compound: float) -> tuple[str, float]:
    """POSITIVE, NEUTRAL or NEGATIVE by VADER's recommended thresholds, and the probability of that label.

    POSITIVE: (compound + 1) / 2; NEGATIVE: (1 - compound) / 2; NEUTRAL: 1 - |compound| (so at least 0.95).
    Like the two-class model's, a monotonic mapping of the compound score, not a calibrated probability.
    """
    compound = max(-1.0, min(1.0, compound))
    if compound >= THRESHOLD:
        return POSITIVE, (compound + 1.0) / 2.0
    if compound <= -THRESHOLD:
        return NEGATIVE, (1.0 - compound) / 2.0
    return NEUTRAL, 1.0 - abs(compound)


class Sentiment3Model(SentimentModel):
    """Scores English short texts (tweets) POSITIVE, NEUTRAL or NEGATIVE with VADER."""

    id = SENTIMENT3_MODEL_ID
    name = "Sentiment Prediction (3 classes)"
    description = ("Scores tweets POSITIVE, NEUTRAL or NEGATIVE with VADER (Hutto and Gilbert, 2014) and the "
                   "thresholds its authors recommend (compound >= 0.05 positive, <= -0.05 negative). "
                   "probability is that of the predicted label, a monotonic mapping of VADER's compound "
                   "score, not a calibrated one.")
    model_type = "vader-sentiment-3"
    label = staticmethod(label_and_probability_3)
