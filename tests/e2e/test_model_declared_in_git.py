"""Models declared in Git (issue 19): a PublishedModel whose content a local HTTP server serves and a
StreamingDeployment that references it, applied together as one GitOps commit; a new model version (another
file and its sha256, the next commit) switches the stream while records flow, each record scored once and
saying which version scored it; deleting both in one apply (a prune) leaves nothing behind in WML."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import skops.io
import yaml
from confluent_kafka import Producer
from kubernetes import client as k8s
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tests.e2e.conftest import StreamEnv, wait_for
from tests.e2e.test_behaviours import ready, wml
from tests.e2e.test_handover import scored, status
from tests.e2e.test_lifecycle import Output
from tests.e2e.test_user_model import LABELS, SCHEMA, TRAIN
from wml_localplatform.tweets import Tweet, polar_tweets
from wml_localplatform.wmloperator import WMLOperator

Kubectl = Callable[..., Any]
NAME = "sentiment"


@pytest.fixture(scope="module")
def tweets() -> list[Tweet]:
    return polar_tweets()


def trained(tweets: list[Tweet], c: float) -> bytes:
    train = tweets[:TRAIN]
    model = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression(C=c, max_iter=1000))])
    return skops.io.dumps(model.fit([t.text for t in train], [t.label for t in train]))


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on loopback serving a directory: where a team's models would be downloaded from."""
    root = tmp_path / "models"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             partial(http.server.SimpleHTTPRequestHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def manifests(env: StreamEnv, url: str, sha256: str) -> str:
    """The commit: the PublishedModel first, then the StreamingDeployment that references it."""
    model = {"apiVersion": "wmlstream.dev/v1alpha1", "kind": "PublishedModel",
             "metadata": {"name": NAME, "namespace": env.namespace},
             "spec": {"framework": {"name": "scikit-learn"}, "source": {"url": {"url": url, "sha256": sha256}},
                      "inputDataSchema": SCHEMA, "labelColumn": "label", "labelValues": LABELS,
                      "wml": {"credentialsSecretRef": {"name": "wml"}}}}
    stream = json.loads(env.manifest())
    del stream["spec"]["modelId"]
    stream["spec"]["modelRef"] = {"name": NAME}
    return yaml.safe_dump_all([model, stream])


class Traffic:
    """Tweets produced one by one (about 100 a second) until stopped; their keys, in order."""

    def __init__(self, env: StreamEnv, tweets: list[Tweet]) -> None:
        self.env, self.tweets = env, tweets
        self.keys: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        producer = Producer(self.env.kafka.client_config())
        i = 0
        while not self._stop.is_set():
            key = f"r{i}"
            tweet = self.tweets[TRAIN + i % (len(self.tweets) - TRAIN)]
            producer.produce(self.env.input_topic, json.dumps({"tweet": tweet.text, "id": key}).encode(),
                             key.encode())
            producer.poll(0)
            self.keys.append(key)
            i += 1
            time.sleep(0.01)
        assert producer.flush(30) == 0

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def mark(self) -> int:
        return len(self.keys)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(60)
        return self.keys


def model_status(k8s_api: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    body: dict[str, Any] = k8s.CustomObjectsApi(k8s_api).get_namespaced_custom_object(
        "wmlstream.dev", "v1alpha1", namespace, "publishedmodels", NAME)
    return dict(body.get("status") or {})


@pytest.fixture
def output(stream_env: StreamEnv) -> Iterator[Output]:
    out = Output(stream_env)
    yield out
    out.close()


def test_a_model_declared_in_git_runs_switches_versions_and_goes(
        stream_env: StreamEnv, operator: WMLOperator, kubectl: Kubectl, k8s_api: k8s.ApiClient, output: Output,
        model_server: tuple[str, Path], tweets: list[Tweet], tmp_path: Path) -> None:
    env, ns = stream_env, stream_env.namespace
    base, root = model_server
    v1, v2 = trained(tweets, 1.0), trained(tweets, 0.05)
    (root / "sentiment-1.skops").write_bytes(v1)
    (root / "sentiment-2.skops").write_bytes(v2)
    commit = tmp_path / "commit.yaml"
    commit.write_text(manifests(env, f"{base}/sentiment-1.skops", hashlib.sha256(v1).hexdigest()))
    kubectl("apply", "-f", str(commit))
    kubectl("wait", "--for=condition=Ready", "--timeout=120s", "-n", ns, f"publishedmodel/{NAME}")
    ready(kubectl, ns)
    published = model_status(k8s_api, ns)
    assert published["digest"] == hashlib.sha256(v1).hexdigest()
    first_version = published["versionId"]
    assert (status(k8s_api, env)["modelId"], status(k8s_api, env)["modelVersion"]) == \
        (published["modelId"], first_version)
    old = status(k8s_api, env)["deploymentId"]

    traffic = Traffic(env, tweets).start()
    try:
        wait_for("records scored by the first version", lambda: output.drain(1.0) >= 200, timeout=90)
        before = output.drain(0)  # scored (by the first version) before the next commit
        # The next commit: another file, its digest.
        commit.write_text(manifests(env, f"{base}/sentiment-2.skops", hashlib.sha256(v2).hexdigest()))
        kubectl("apply", "-f", str(commit))
        wait_for("the new deployment", lambda: status(k8s_api, env).get("deploymentId") not in (None, old)
                 and status(k8s_api, env).get("modelVersion") != first_version, timeout=120)
        ready(kubectl, ns)
        after = traffic.mark()
        wait_for("records after the switch", lambda: traffic.mark() > after + 200, timeout=60)
        keys = traffic.stop()
        scored(output, keys, timeout=120)  # each exactly once, none missing
    finally:
        traffic.stop()  # also when a wait failed: no producer left running after the test
    republished = model_status(k8s_api, ns)
    assert republished["modelId"] == published["modelId"], "a new version, not a new model"
    second_version = republished["versionId"]
    assert second_version != first_version
    assert status(k8s_api, env)["modelVersion"] == second_version
    by_key = {r["id"]: r for r in output.records}
    versions = [by_key[k].get("model_version") for k in keys]
    # One partition: in the order produced, the first version's records, then the second's, one switch.
    switch = versions.index(second_version)
    assert versions == [first_version] * switch + [second_version] * (len(versions) - switch)
    assert before <= switch <= after
    assert "handed over from deployment" in status(k8s_api, env)["handOver"]
    api = wml(env)
    assert [d.id for d in api.list_instance_deployments()] == [status(k8s_api, env)["deploymentId"]]

    # Both leave the repository in one apply (a prune deletes them together), with the WML credentials Secret:
    # both deletions then go through the logins the operator kept.
    kubectl("delete", "secret", "wml", "-n", ns)
    kubectl("delete", "-f", str(commit), "--timeout=120s")
    assert api.list_instance_deployments() == []
    assert api.list_model_assets() == []
