"""A real Spark MLlib PipelineModel for the tests, trained in a subprocess (no JVM in the test process):
RegexTokenizer -> HashingTF -> LogisticRegression -> IndexToString, on a few texts, `tweet` in, saved and tarred
as a user would upload it. About 20 s on 2 cores."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

_TRAIN = r"""
import os, sys
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
from pyspark.ml import Pipeline
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import HashingTF, IndexToString, RegexTokenizer
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "1").getOrCreate())
good = ["I love it", "what a great day", "so happy now", "lovely and wonderful", "best thing ever"]
bad = ["awful", "I hate this", "terrible news", "the worst day", "sad and angry"]
rows = [(t, 1.0) for t in good] * 4 + [(t, 0.0) for t in bad] * 4
train = spark.createDataFrame(rows, "tweet string, label double")
model = Pipeline(stages=[
    RegexTokenizer(inputCol="tweet", outputCol="words", pattern="[\\w']+", gaps=False),
    HashingTF(inputCol="words", outputCol="features", numFeatures=1024),
    LogisticRegression(maxIter=50, regParam=0.01),
    IndexToString(inputCol="prediction", outputCol="predicted_label", labels=["NEGATIVE", "POSITIVE"]),
]).fit(train)
model.write().overwrite().save(sys.argv[1])
spark.stop()
"""


def mllib_model_archive(directory: Path) -> Path:
    """Trains the model into `directory` once; returns its .tar.gz."""
    archive = directory / "tweets-mllib.tar.gz"
    if archive.exists():
        return archive
    saved = directory / "tweets-mllib"
    subprocess.run([sys.executable, "-c", _TRAIN, str(saved)], check=True, timeout=300,
                   capture_output=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(saved, arcname="model")
    return archive
