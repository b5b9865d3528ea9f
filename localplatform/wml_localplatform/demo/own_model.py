"""The data scientist's step of the demo: a model of their own, declared in Git and deployed beside VADER.

"A data scientist prepares a predictive model and shares it with you; your task is to deploy it." The model is
trained here on the tweets the demo never sends (the fixed split of wml_localplatform.sample_models), saved in
skops's format and shared at a URL (a plain HTTP server on loopback, as a team's artifact store would be). What
goes to Git is two resources in one apply: a PublishedModel (the URL and the file's sha256; the operator
publishes it) and a second StreamingDeployment whose modelRef names it, reading the same tweets: both models'
agreement with the human raters is shown side by side.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from wml_localplatform import process, sample_models
from wml_localplatform.config import cache_dir
from wml_localplatform.demo.console import Console
from wml_localplatform.demo.errors import DemoError
from wml_localplatform.demo.kubectl import watch
from wml_localplatform.demo.samples import sample_model_pair
from wml_localplatform.demo.show import show_records, summarize
from wml_localplatform.demo.start import NOT_SPARK, Running, spark_credentials
from wml_localplatform.demo.topics import OutputReader, create_topics
from wml_localplatform.tweets import Tweet

MODEL_NAME = "Tweet sentiment (scikit-learn)"
SUFFIX = "-sklearn"
MODEL_RESOURCE = "tweets-sklearn"  # deploy/samples' PublishedModel
MODEL_FILE = "tweets-sklearn.skops"
SERVER_NAME = "http.server"  # what the PID file's process must be running
PID_FILE, PORT_FILE = "model-server.pid", "model-server.port"


def train_and_save(console: Console, folder: Path) -> Path:
    console.step("A data scientist shares a model: scikit-learn, trained on the tweets the demo does not send")
    started = time.monotonic()
    split = sample_models.load_split()
    path = folder / MODEL_FILE
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


def serve(console: Console, folder: Path) -> str:
    """The folder at a URL, by a process of its own that stays up with the demo (`make demo-down` stops it): the
    operator fetches the model from there, as from a team's artifact store."""
    pid_file = folder / PID_FILE
    if process.is_running(pid_file):
        port = int((folder / PORT_FILE).read_text())
    else:
        port = process.free_port()
        proc = process.start(SERVER_NAME, [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                           "--directory", str(folder)], folder / "model-server.log", pid_file)
        (folder / PORT_FILE).write_text(str(port))
        process.wait_ready("model server", lambda: process.port_open(port), proc, folder / "model-server.log", 30)
    url = f"http://127.0.0.1:{port}"
    console.say(f"the data scientist shares it at {url}/{MODEL_FILE}")
    return url


def declared(run: Running, url: str, path: Path) -> list[dict[str, Any]]:
    """What goes to Git: deploy/samples' PublishedModel with the file's URL and digest, and the StreamingDeployment
    whose modelRef names it (it reads the sample's topic and writes to one of its own)."""
    st = run.state
    model, doc = sample_model_pair(st.namespace, st.wml_url, f"{url}/{path.name}",
                                   hashlib.sha256(path.read_bytes()).hexdigest())
    doc["spec"]["input"]["topic"] = st.input_topic
    doc["spec"]["output"]["topic"] = st.output_topic + SUFFIX
    if st.spark_master:
        # The sample's Spark Secret names the Spark master; this one keeps the built-in engine, so the demo shows
        # both engines side by side (a scikit-learn model could run on Spark too).
        doc["spec"]["sparkCredentialsSecretRef"]["name"] += SUFFIX
    return [model, doc]


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
    url = serve(console, folder)
    model, doc = declared(run, url, path)
    name, output = doc["metadata"]["name"], doc["spec"]["output"]["topic"]
    create_topics(run.kafka, [output])
    secret = builtin_engine_secret(run, doc)
    if secret:
        console.command(f"kubectl apply -n {run.state.namespace} -f -   # secret/{secret['metadata']['name']}: "
                        f"cluster_master_url {NOT_SPARK}, the built-in engine (both engines, side by side)")
        run.kubectl("apply", "-f", "-", input=json.dumps(secret))
    console.step(f"Declaring it in Git: publishedmodel/{MODEL_RESOURCE} and sdep/{name}, which reads the same topic "
                 f"{run.state.input_topic}, in one apply")
    manifest = yaml.safe_dump_all([model, doc], sort_keys=False)
    (folder / "commit.yaml").write_text(manifest)
    for line in manifest.splitlines():
        if line.startswith(("kind:", "  name:", "    url:", "      url:", "      sha256:", "  modelRef:")):
            console.say("  " + line)
    console.command(f"kubectl apply -f {folder / 'commit.yaml'}")
    run.kubectl("apply", "-f", str(folder / "commit.yaml"))
    waited = run.kubectl("wait", "--for=condition=Ready", "--timeout=120s", "-n", run.state.namespace,
                         f"publishedmodel/{MODEL_RESOURCE}", check=False)
    published = json.loads(run.kubectl("get", "publishedmodel", MODEL_RESOURCE, "-n", run.state.namespace,
                                       "-o", "json").stdout).get("status") or {}
    if waited.returncode != 0:
        raise DemoError(f"publishedmodel/{MODEL_RESOURCE} is not Ready: {published.get('message', '?')}")
    console.say(f"published as model {published.get('modelId')}, version {published.get('versionId')} "
                f"(sha256 {published.get('digestShort')}...); the stream waited for it, then started")
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
