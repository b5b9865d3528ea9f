"""The Spark MLlib sample model, run by bench/train_sample_models.py --spark in its own pyspark venv.

    <pyspark venv>/bin/python bench/_spark_sample_model.py --split SPLIT.json --model-dir DIR --result RESULT.json

Standard library and pyspark only (the project's venv has no pyspark, this venv has nothing of the project's).
SPLIT.json holds the split train_sample_models.py made (wml_localplatform.sample_models), so this trains and tests
on exactly the same tweets as the scikit-learn model. The pipeline, on a DataFrame with one string column `tweet`
(the models' declared input):

    RegexTokenizer (lower case, runs of letters, digits, _ and ') -> NGram(2)
    -> CountVectorizer of words and of bigrams (minDF 2) -> VectorAssembler -> IDF (minDocFreq 2)
    -> LogisticRegression (regParam 0.01, classes weighted as scikit-learn's "balanced", not tuned)
    -> IndexToString: the column `predicted_label` holds "NEGATIVE" / "POSITIVE", as VADER's model answers.

It saves the PipelineModel (model.write().save) into --model-dir, loads it back and checks it predicts the same,
and writes RESULT.json: the held-out predictions, in the split's order, and the timings. The scoring time is the
model alone: transform of the cached test DataFrame, predictions collected, the best of --runs; the session's
start, the fit and the DataFrame's creation are outside it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

LABELS = ["NEGATIVE", "POSITIVE"]  # label index 0, 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    split: dict[str, Any] = json.loads(args.split.read_text())

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    started = time.perf_counter()
    import pyspark
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import IDF, CountVectorizer, IndexToString, NGram, RegexTokenizer, VectorAssembler
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName("wso-sample-model")
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false").config("spark.sql.shuffle.partitions", "2")
             .config("spark.driver.memory", "1g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    session_s = time.perf_counter() - started

    train_labels = [LABELS.index(label) for label in split["train_labels"]]
    counts = [train_labels.count(i) for i in range(len(LABELS))]
    weights = [len(train_labels) / (len(LABELS) * c) for c in counts]  # scikit-learn's class_weight="balanced"
    train = spark.createDataFrame(
        [(text, float(label), weights[label]) for text, label in zip(split["train_texts"], train_labels, strict=True)],
        "tweet string, label double, weight double")
    test = spark.createDataFrame(list(enumerate(split["test_texts"])), "row long, tweet string").cache()
    test.count()

    pipeline = Pipeline(stages=[
        RegexTokenizer(inputCol="tweet", outputCol="words", pattern="[\\w']+", gaps=False, toLowercase=True),
        NGram(n=2, inputCol="words", outputCol="bigrams"),
        CountVectorizer(inputCol="words", outputCol="word_tf", minDF=2),
        CountVectorizer(inputCol="bigrams", outputCol="bigram_tf", minDF=2),
        VectorAssembler(inputCols=["word_tf", "bigram_tf"], outputCol="tf"),
        IDF(inputCol="tf", outputCol="features", minDocFreq=2),
        LogisticRegression(featuresCol="features", labelCol="label", weightCol="weight", regParam=0.01,
                           maxIter=100),
        IndexToString(inputCol="prediction", outputCol="predicted_label", labels=LABELS),
    ])
    started = time.perf_counter()
    model = pipeline.fit(train)
    fit_s = time.perf_counter() - started

    def predict(fitted: PipelineModel) -> list[str]:
        rows = fitted.transform(test).select("row", "predicted_label").collect()
        by_row = {row["row"]: row["predicted_label"] for row in rows}
        return [by_row[i] for i in range(len(split["test_texts"]))]

    predicted = predict(model)
    timings = []
    for _ in range(args.runs):
        started = time.perf_counter()
        predict(model)
        timings.append(time.perf_counter() - started)

    model.write().overwrite().save(str(args.model_dir))
    reloaded = predict(PipelineModel.load(str(args.model_dir)))
    args.result.write_text(json.dumps({
        "pyspark": pyspark.__version__,
        "java": spark.sparkContext._jvm.java.lang.System.getProperty("java.version"),  # type: ignore[union-attr]
        "session_start_s": session_s,
        "fit_s": fit_s,
        "predicted": predicted,
        "reloaded_predicts_the_same": reloaded == predicted,
        "score_s": timings,
        "runs": args.runs,
    }, indent=1) + "\n")
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
