"""Train the sample models a data scientist would have made (issue 16), measure them beside VADER, save them.

    .venv/bin/python bench/train_sample_models.py [--spark] [--out DIR] [--runs N] [--json PATH]
                                                  [--publish URL --username U --password P --instance-id I]

Data and truth as bench/model_accuracy.py: tweets_GroundTruth.txt of the vaderSentiment 3.3.2 sdist, POSITIVE when
the raters' mean is > 0, NEGATIVE when < 0, exactly 0 dropped. The split is wml_localplatform.sample_models's
fixed, stratified 80/20 (by sha256 of the tweet id, no random generator): 3,357 tweets train, 839 are held out.

- scikit-learn: wml_localplatform.sample_models.train_sklearn, TF-IDF of word 1-2-grams and character 2-5-grams,
  logistic regression (C=10, balanced class weights). Chosen by 5-fold cross-validation on the training side only
  (macro F1 / accuracy): words alone 0.790 / 0.837, characters alone 0.810 / 0.849, both 0.812 / 0.850, both
  with balanced weights 0.830 / 0.857 (C from 3 to 100 within 0.002). Saved as model.skops and as
  model.tar.gz (one joblib pickle, the way the v3 clients uploaded pipelines).
- Spark MLlib (--spark): bench/_spark_sample_model.py, run in its own venv with pyspark pinned
  ($WSO_CACHE/venvs/pyspark-<version>, created on first use: 584 MB, 65 s with an empty pip cache), on the same
  split handed over as a JSON file. The saved PipelineModel directory is packed as spark-pipeline.tar.gz. Spark's
  scoring cost is mostly the fixed cost of one Spark job (839 records are a small batch for it).
- VADER, the service's built-in sample model, is not trained: it is scored on the same held-out tweets.

Printed per model: precision, recall, F1 per class, macro F1, accuracy on the held-out tweets, and the model-only
scoring cost: one predict() (Spark: transform + collect) of all 839 held-out texts, the best of --runs, divided by
839. Models are written under --out (default $WSO_CACHE/sample-models), never into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _machine import describe, machine
from model_accuracy import class_scores
from wml_localplatform import sample_models
from wml_localplatform.config import cache_dir
from wml_localplatform.sample_models import LABELS, Split

PYSPARK_VERSION = "4.2.0"  # Spark's Kafka jars resolve from Maven Central up to 4.2.0 (the Spark issue uses them)
BENCH = Path(__file__).resolve().parent
ORDER = list(reversed(LABELS))  # POSITIVE first, as bench/model_accuracy.py prints


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def publish_models(url: str, username: str, password: str, instance_id: str, paths: dict[str, Path]) -> list[str]:
    """Publish the saved models through the service's v3 repository API; returns their model ids."""
    from wml_api.client import WMLClient
    from wml_api.credentials import WMLCredentials

    ids = []
    with WMLClient(url, WMLCredentials(username, password), instance_id, read_timeout=300) as client:
        for name, path in paths.items():
            framework = "mllib" if name.startswith("Spark") else "scikit-learn"
            ids.append(sample_models.publish(client, path, f"Tweets ({name})", framework))
    return ids


def scores(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    per_class = {label: class_scores(list(truth), list(predicted), label).__dict__ for label in ORDER}
    return {
        "accuracy": sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth),
        "macro_f1": sum(s["f1"] for s in per_class.values()) / len(per_class),
        "classes": per_class,
    }


def best_seconds(run: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def measure_sklearn(split: Split, out: Path, runs: int) -> dict[str, Any]:
    import sklearn

    sample_models.build_sklearn()  # imports scikit-learn's modules outside the fit's time
    started = time.perf_counter()
    pipeline = sample_models.train_sklearn(split)
    fit_s = time.perf_counter() - started
    paths = {"skops": sample_models.save_skops(pipeline, out / "sklearn" / "model.skops"),
             "pickle_targz": sample_models.save_pickle_targz(pipeline, out / "sklearn" / "model.tar.gz")}
    predicted = [str(p) for p in pipeline.predict(split.test_texts)]
    seconds = best_seconds(lambda: pipeline.predict(split.test_texts), runs)
    return {"model": f"scikit-learn {sklearn.__version__}: TF-IDF words 1-2 + chars 2-5, logistic regression",
            "fit_s": fit_s, "us_per_record": seconds / len(split.test_texts) * 1e6,
            "files": {k: str(v) for k, v in paths.items()}, **scores(split.test_labels, predicted)}


def measure_vader(split: Split, runs: int) -> dict[str, Any]:
    from wml_server.models.sentiment import SentimentModel

    model = SentimentModel()
    predicted, _ = model.predict(split.test_texts)
    seconds = best_seconds(lambda: model.predict(split.test_texts), runs)
    return {"model": f"VADER ({model.runtime_environment}), not trained", "fit_s": None,
            "us_per_record": seconds / len(split.test_texts) * 1e6, "files": {},
            **scores(split.test_labels, list(predicted))}


def spark_venv(version: str) -> Path:
    """The python of a venv with pyspark==version, outside the repository; created on first use."""
    venv = cache_dir() / "venvs" / f"pyspark-{version}"
    python, marker = venv / "bin" / "python", venv / ".installed"
    if marker.is_file():
        return python
    _note(f"creating {venv} with pyspark=={version} (about 600 MB, a minute or two, once)")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    f"pyspark=={version}", "numpy"], check=True, timeout=1800)
    marker.write_text(f"pyspark=={version}\n")
    _note(f"created {venv} in {time.perf_counter() - started:.0f} s")
    return python


def measure_spark(split: Split, out: Path, runs: int, version: str) -> dict[str, Any]:
    python = spark_venv(version)
    work = out / "spark"
    work.mkdir(parents=True, exist_ok=True)
    split_file, result_file, log_file = work / "split.json", work / "result.json", work / "spark.log"
    split_file.write_text(json.dumps(split.__dict__))
    model_dir = work / "spark-pipeline"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": str(python),
           "PYSPARK_DRIVER_PYTHON": str(python)}
    _note(f"training the Spark pipeline (its output: {log_file})")
    with log_file.open("w") as log:
        done = subprocess.run([str(python), str(BENCH / "_spark_sample_model.py"), "--split", str(split_file),
                               "--model-dir", str(model_dir), "--result", str(result_file), "--runs", str(runs)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, timeout=900, check=False)
    if done.returncode != 0:
        tail = "\n".join(log_file.read_text().splitlines()[-15:])
        raise RuntimeError(f"the Spark pipeline failed (exit {done.returncode}); end of {log_file}:\n{tail}")
    result = json.loads(result_file.read_text())
    archive = work / "spark-pipeline.tar.gz"
    with tarfile.open(archive, mode="w:gz") as tar:
        tar.add(model_dir, arcname=model_dir.name)
    return {"model": f"Spark MLlib {result['pyspark']} (Java {result['java']}, local[2]): TF-IDF of words + "
                     "bigrams, logistic regression",
            "fit_s": result["fit_s"], "session_start_s": result["session_start_s"],
            "us_per_record": min(result["score_s"]) / len(split.test_texts) * 1e6,
            "reloaded_predicts_the_same": result["reloaded_predicts_the_same"],
            "files": {"pipeline_dir": str(model_dir), "pipeline_targz": str(archive)},
            **scores(split.test_labels, result["predicted"])}


def report(figures: dict[str, Any]) -> str:
    lines = [f"Held-out split: {figures['test']} tweets ({figures['test_positive']} POSITIVE / "
             f"{figures['test_negative']} NEGATIVE); {figures['train']} trained on", ""]
    for name, m in figures["models"].items():
        fit = f", fitted in {m['fit_s']:.1f} s" if m.get("fit_s") is not None else ""
        lines += [f"{name}: {m['model']}{fit}",
                  f"{'':<14}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>10}"]
        for label, s in m["classes"].items():
            lines.append(f"{label:<14}{s['precision']:>10.3f}{s['recall']:>10.3f}{s['f1']:>10.3f}{s['support']:>10}")
        lines += [f"{'macro F1':<14}{'':>20}{m['macro_f1']:>10.3f}", f"{'accuracy':<14}{m['accuracy']:>10.3f}",
                  f"{'model only':<14}{m['us_per_record']:>10.1f} µs/record (best of {figures['runs']})", ""]
    lines += [f"{'model':<14}{'accuracy':>10}{'macro F1':>10}{'µs/record':>12}"]
    lines += [f"{name:<14}{m['accuracy']:>10.3f}{m['macro_f1']:>10.3f}{m['us_per_record']:>12.1f}"
              for name, m in figures["models"].items()]
    lines += ["", f"machine: {describe(figures['machine'])}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=cache_dir() / "sample-models", help="where the models go")
    parser.add_argument("--spark", action="store_true", help="also the Spark MLlib pipeline (its own venv)")
    parser.add_argument("--pyspark-version", default=PYSPARK_VERSION)
    parser.add_argument("--runs", type=int, default=5, help="timed predict() runs; the best counts (default 5)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--publish", metavar="URL", help="publish the models to this WML service")
    parser.add_argument("--username", default=os.environ.get("WML_USERNAME", ""))
    parser.add_argument("--password", default=os.environ.get("WML_PASSWORD", ""))
    parser.add_argument("--instance-id", default=os.environ.get("WML_INSTANCE_ID", ""))
    args = parser.parse_args(argv)

    before = machine()
    split = sample_models.load_split(say=_note)
    models = {"VADER": measure_vader(split, args.runs), "scikit-learn": measure_sklearn(split, args.out, args.runs)}
    if args.spark:
        models["Spark MLlib"] = measure_spark(split, args.out, args.runs, args.pyspark_version)
    figures = {"train": len(split.train_ids), "test": len(split.test_ids),
               "test_positive": split.test_labels.count("POSITIVE"),
               "test_negative": split.test_labels.count("NEGATIVE"),
               "runs": args.runs, "models": models, "machine": before}
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.publish:
        paths = {f"{name} {kind}": Path(path) for name, m in models.items() for kind, path in m["files"].items()
                 if kind != "pipeline_dir"}
        ids = publish_models(args.publish, args.username, args.password, args.instance_id, paths)
        print(f"published: {', '.join(ids)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
