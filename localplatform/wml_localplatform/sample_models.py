"""Sample models a data scientist would have made (issue 16): a scikit-learn text classifier trained on tweets.

The data is VADER's own ground truth (wml_localplatform.tweets, the same file and truth rule as
bench/model_accuracy.py): POSITIVE when the raters' mean is > 0, NEGATIVE when < 0, tweets rated exactly 0 dropped.

The split is fixed and does not depend on any library's random generator: within each class, the tweets are
ordered by sha256("issue-16:" + tweet id) and the first 20 % (rounded) are held out for testing, the rest train.
So it is stratified, the same on every machine and with every scikit-learn or Spark release, and a tweet keeps
its side even if the file's order changes. bench/train_sample_models.py hands exactly these tweets to the Spark
pipeline too, so every model (and VADER) is measured on the same held-out tweets.

The model is fitted on a plain list of strings, as the service hands a model whose schema has one string field a
1-D list of strings, and it predicts the labels VADER's sample model does ("POSITIVE"/"NEGATIVE"), so a stream's
output looks the same whichever model scores it.

Imports scikit-learn only when a function needs it, and never pyspark: the demo imports this module.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wml_localplatform.tweets import Tweet, polar_tweets

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from wml_api.client import WMLClient

NEGATIVE, POSITIVE = "NEGATIVE", "POSITIVE"
LABELS = [NEGATIVE, POSITIVE]  # sorted, as scikit-learn orders classes_
INPUT_FIELD = "tweet"  # the demo's records are JSON objects with a `tweet` field
# The models' declared input, as a v3 `input_data_schema` (a Spark-style struct with one string field).
INPUT_DATA_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "fields": [{"name": INPUT_FIELD, "type": "string", "nullable": False, "metadata": {}}],
}
TEST_FRACTION = 0.2
SPLIT_SALT = "issue-16:"
PICKLE_MEMBER = "scikit_pipeline.pkl"  # the one member of the .tar.gz


@dataclass(frozen=True)
class Split:
    """The fixed train/test split of the polar tweets; `*_ids` are the tweets' ids in tweets_GroundTruth.txt."""

    train_ids: list[str]
    train_texts: list[str]
    train_labels: list[str]
    test_ids: list[str]
    test_texts: list[str]
    test_labels: list[str]


def _split_key(tweet: Tweet) -> str:
    return hashlib.sha256((SPLIT_SALT + tweet.id).encode()).hexdigest()


def split_tweets(tweets: Sequence[Tweet], test_fraction: float = TEST_FRACTION) -> Split:
    """The fixed, stratified split of `tweets` (those rated exactly 0 are dropped first); each side in file order."""
    polar = [t for t in tweets if t.mean != 0]
    held_out: set[str] = set()
    for label in LABELS:
        members = sorted((t for t in polar if t.label == label), key=_split_key)
        held_out.update(t.id for t in members[: round(len(members) * test_fraction)])
    train = [t for t in polar if t.id not in held_out]
    test = [t for t in polar if t.id in held_out]
    return Split([t.id for t in train], [t.text for t in train], [t.label for t in train],
                 [t.id for t in test], [t.text for t in test], [t.label for t in test])


def load_split(folder: Path | None = None, say: Callable[[str], None] | None = None) -> Split:
    """The split of VADER's tweets, downloading the data into the cache on first use."""
    return split_tweets(polar_tweets(folder, say))


def build_sklearn() -> Pipeline:
    """TF-IDF of word 1-2-grams and of character 2-5-grams within words, then logistic regression.

    Tweets are short and informal: word bigrams keep short negations ("not good"), character n-grams match
    elongations, misspellings and hashtags ("sooo", "luv", "#blessed") and emoticons (":)", ":(") that the word
    tokenizer drops. sublinear_tf damps repeats ("love love love"). The settings were chosen by 5-fold
    cross-validation on the training side only (bench/train_sample_models.py's docstring has the figures).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    features = FeatureUnion([
        ("words", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)),
    ])
    classifier = LogisticRegression(C=10.0, class_weight="balanced", max_iter=1000)
    return Pipeline([("features", features), ("classifier", classifier)])


def train_sklearn(split: Split | None = None) -> Pipeline:
    """The scikit-learn pipeline fitted on the training side of the split (a few seconds)."""
    split = split or load_split()
    pipeline = build_sklearn()
    pipeline.fit(list(split.train_texts), list(split.train_labels))
    for _, vectorizer in pipeline.named_steps["features"].transformer_list:
        # The terms min_df pruned: only for introspection, and most of the saved size (scikit-learn's docs say
        # it can be removed before saving).
        vectorizer.stop_words_ = None
    return pipeline


def save_skops(pipeline: Pipeline, path: Path) -> Path:
    """The pipeline in skops's format, which loads without running code (only default trusted types inside)."""
    import zipfile

    import skops.io

    path.parent.mkdir(parents=True, exist_ok=True)
    skops.io.dump(pipeline, path, compression=zipfile.ZIP_DEFLATED)
    return path


def save_pickle_targz(pipeline: Pipeline, path: Path) -> Path:
    """A .tar.gz holding one joblib pickle of the pipeline, as the v3 clients uploaded scikit-learn models."""
    import joblib

    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode="w:gz") as archive:
        member = tarfile.TarInfo(PICKLE_MEMBER)
        member.size, member.mtime, member.mode = len(data), int(time.time()), 0o644
        archive.addfile(member, io.BytesIO(data))
    return path


def publish(client: WMLClient, path: Path, name: str, framework: str = "scikit-learn") -> str:
    """Publishes a saved model through the service's repository API, as a data scientist would; its id."""
    from wml_api.repository import Framework, ModelAssetCreate

    meta = ModelAssetCreate(name=name, framework=Framework(name=framework), input_data_schema=INPUT_DATA_SCHEMA,
                            label_column="sentiment", label_values=list(LABELS),
                            description=f"Trained on the fixed split of tweets_GroundTruth.txt ({path.name}).")
    with path.open("rb") as content:
        return client.publish_model(meta, content).id
