"""The data scientist's step of the demo: a model of their own, published and deployed beside VADER.

"A data scientist prepares a predictive model and shares it with you; your task is to deploy it." The model is
trained here on the tweets the demo never sends (the fixed split of wml_localplatform.sample_models), saved in
skops's format, published with `wml-server publish`, and deployed with a second StreamingDeployment that reads
the same tweets: both models' agreement with the human raters is shown side by side.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wml_localplatform import sample_models
from wml_localplatform.config import cache_dir
from wml_localplatform.demo.console import Console
from wml_localplatform.demo.errors import DemoError
from wml_localplatform.demo.kubectl import watch
from wml_localplatform.demo.samples import sample_resource
from wml_localplatform.demo.show import show_records, summarize
from wml_localplatform.demo.start import NOT_SPARK, Running, spark_credentials
from wml_localplatform.demo.topics import OutputReader, create_topics
from wml_localplatform.tweets import Tweet

MODEL_NAME = "Tweet sentiment (scikit-learn)"
SUFFIX = "-sklearn"


def train_and_save(console: Console, folder: Path) -> Path:
    console.step("A data scientist shares a model: scikit-learn, trained on the tweets the demo does not send")
    started = time.monotonic()
    split = sample_models.load_split()
    path = folder / "tweets-sklearn.skops"
    # Trained once per scikit-learn version and split, then kept in the cache: the data scientist's work,
    # not the demo's (training takes 4 to 20 s on 2 cores).
    import sklearn

    cached = cache_dir() / "sample-models" / f"demo-tweets-sklearn-{sklearn.__version__}-{split_digest(split)}.skops"
    if cached.exists():
        how = f"trained earlier, kept in {cached.parent}"
    else:
        sample_models.save_skops(sample_models.train_sklearn(split), cached.with_suffix(".partial"))
        cached.with_suffix(".partial").replace(cached)
        how = f"trained in {time.monotonic() - started:.1f} s"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, path)
    console.say(f"TF-IDF + logistic regression on {len(split.train_ids)} rated tweets ({how}); the demo's tweets "
                f"are all among the {len(split.test_ids)} held out")
    console.say(f"shared as {path} ({path.stat().st_size // 1024} KiB, skops's format: loading it runs no code)")
    return path


def split_digest(split: sample_models.Split) -> str:
    return hashlib.sha256("\n".join(split.train_ids).encode()).hexdigest()[:12]


def publish(console: Console, run: Running, path: Path) -> str:
    console.step("Publishing it to WML through the v3 repository API")
    schema = json.dumps(sample_models.INPUT_DATA_SCHEMA, separators=(",", ":"))
    args = ["publish", str(path), "--name", MODEL_NAME, "--schema", schema, "--label-column", "sentiment",
            "--label-values", ",".join(sample_models.LABELS), "--url", run.state.wml_url,
            "--instance-id", run.state.instance_id, "--username", run.user.username]
    console.command("wml-server " + " ".join(shlex.quote(a) for a in args) + "   # password on stdin")
    result = subprocess.run([sys.executable, "-m", "wml_server", *args], input=run.user.password + "\n",
                            capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise DemoError(f"publishing the model failed: {result.stderr.strip()}")
    model_id = result.stdout.strip().splitlines()[-1]
    console.say(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"published as {model_id}")
    return model_id


def second_resource(run: Running, model_id: str) -> dict[str, Any]:
    """The sample resource again, named and writing apart, with the published model's id."""
    st = run.state
    doc = copy.deepcopy(sample_resource(st.namespace, st.wml_url))
    doc["metadata"]["name"] = st.name + SUFFIX
    doc["spec"]["modelId"] = model_id
    doc["spec"]["output"]["topic"] = st.output_topic + SUFFIX
    if st.spark_master:
        # The sample's Spark Secret names the Spark master; this one keeps the built-in engine, so the demo shows
        # both engines side by side (a scikit-learn model could run on Spark too).
        doc["spec"]["sparkCredentialsSecretRef"]["name"] += SUFFIX
    return doc


def builtin_engine_secret(run: Running, doc: dict[str, Any]) -> dict[str, Any] | None:
    """With `--spark`, the second resource's own Spark Secret: a cluster_master_url that is no Spark master."""
    ref = doc["spec"]["sparkCredentialsSecretRef"]
    if not run.spark:
        return None
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": ref["name"], "namespace": run.state.namespace},
            "stringData": {ref["key"]: json.dumps(spark_credentials(NOT_SPARK), indent=2)}}


def own_model(run: Running, console: Console, folder: Path, tweets: list[Tweet],
              vader_records: list[dict[str, Any]]) -> None:
    path = train_and_save(console, folder)
    model_id = publish(console, run, path)
    doc = second_resource(run, model_id)
    name, output = doc["metadata"]["name"], doc["spec"]["output"]["topic"]
    console.step(f"Deploying it beside VADER: sdep/{name} reads the same topic {run.state.input_topic}")
    create_topics(run.kafka, [output])
    secret = builtin_engine_secret(run, doc)
    if secret:
        console.command(f"kubectl apply -n {run.state.namespace} -f -   # secret/{secret['metadata']['name']}: "
                        f"cluster_master_url {NOT_SPARK}, the built-in engine (both engines, side by side)")
        run.kubectl("apply", "-f", "-", input=json.dumps(secret))
    console.command(f"kubectl apply -n {run.state.namespace} -f -   # the sample again: name {name}, "
                    f"modelId {model_id}, output topic {output}")
    run.kubectl("apply", "-f", "-", input=json.dumps(doc))
    took = watch(run.kubectl, console, run.state.namespace, name, ["condition=Ready"])
    console.say(f"Ready after {took:.1f} s (the model runs in a sandboxed worker process of its own)")
    truth = {t.id: t for t in tweets}
    reader = OutputReader(run.kafka, output)
    try:
        console.say(f"It scores the {len(tweets)} tweets already on {run.state.input_topic} (its own consumer "
                    f"group, from the start), into {output}:")
        took = show_records(console, reader, len(tweets), truth, sample=5)
        console.say(f"scored {len(reader.records)} of {len(tweets)} tweets in {took:.1f} s")
        mine = list(reader.records)
    finally:
        reader.close()
    console.say()
    for line in side_by_side(vader_records, mine, truth):
        console.say(line)


def side_by_side(vader: list[dict[str, Any]], mine: list[dict[str, Any]], truth: dict[str, Tweet]) -> list[str]:
    """Both models' agreement with the raters on the same tweets, and with each other."""
    lines = [f"{'':<34}{'agree with raters':>20}{'macro F1':>10}"]
    for label, records in (("VADER (Sentiment Prediction)", vader), (MODEL_NAME, mine)):
        summary = summarize(records, truth)
        scored = summary.total - summary.errors
        share = 100.0 * summary.agree / scored if scored else 0.0
        lines.append(f"{label:<34}{f'{summary.agree} of {scored} ({share:.1f} %)':>20}{macro_f1(summary.table):>10.3f}")
    first = {str(r.get("id")): r.get("prediction") for r in vader}
    both = sum(1 for r in mine if first.get(str(r.get("id"))) == r.get("prediction"))
    lines.append(f"the two models give the same label to {both} of {len(mine)} tweets")
    return lines


def macro_f1(table: list[list[int]]) -> float:
    """Rows: raters positive / negative; columns: model POSITIVE / NEGATIVE."""
    scores = []
    for k in (0, 1):
        predicted = table[0][k] + table[1][k]
        actual = table[k][0] + table[k][1]
        precision = table[k][k] / predicted if predicted else 0.0
        recall = table[k][k] / actual if actual else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / 2
