"""A model a user published through the repository API (`/v3/ml_assets/models`), run through the operator by its
id (issue 16): the operator needs no change for it. A scikit-learn pipeline trained on real tweets scores every
record exactly once across a STOP/RUN flip, records its input schema cannot take come out with an error, and a
published model this service cannot run (Spark MLlib) leaves the resource Stalled with a message that says so."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import skops.io
from confluent_kafka import Producer
from kubernetes import client as k8s
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tests.e2e.conftest import StreamEnv, wait_for
from tests.e2e.test_behaviours import ready, wml
from tests.e2e.test_handover import scored, status
from tests.e2e.test_lifecycle import Output, condition, sdep
from tests.integration.test_wml_repository_api import mllib_tar_bytes
from wml_api.repository import Framework, ModelAssetCreate
from wml_localplatform.tweets import Tweet, polar_tweets
from wml_localplatform.wmloperator import WMLOperator

Kubectl = Callable[..., Any]
SCHEMA = {"type": "struct", "fields": [{"name": "tweet", "type": "string", "nullable": False, "metadata": {}}]}
LABELS = ["NEGATIVE", "POSITIVE"]
TRAIN = 1000  # tweets to train on; the ones after them are sent to the stream


def asset_meta(name: str, framework: str = "scikit-learn") -> ModelAssetCreate:
    return ModelAssetCreate(name=name, framework=Framework(name=framework), input_data_schema=SCHEMA,
                            label_column="label", label_values=LABELS)


@pytest.fixture(scope="module")
def tweets() -> list[Tweet]:
    return polar_tweets()


@pytest.fixture(scope="module")
def pipeline(tweets: list[Tweet]) -> Pipeline:
    train = tweets[:TRAIN]
    model = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression(max_iter=1000))])
    return model.fit([t.text for t in train], [t.label for t in train])


@pytest.fixture
def output(stream_env: StreamEnv) -> Iterator[Output]:
    out = Output(stream_env)
    yield out
    out.close()


def send(env: StreamEnv, records: dict[str, dict[str, Any]]) -> None:
    """Each record by its key, as JSON."""
    producer = Producer(env.kafka.client_config())
    for key, record in records.items():
        producer.produce(env.input_topic, json.dumps(record).encode(), key.encode())
    assert producer.flush(30) == 0


def tweet_records(tweets: list[Tweet], prefix: str) -> dict[str, dict[str, Any]]:
    return {f"{prefix}{i}": {"tweet": t.text, "id": f"{prefix}{i}", "rating": t.mean} for i, t in enumerate(tweets)}


def test_a_published_model_runs_by_id_and_scores_each_record_once(
        stream_env: StreamEnv, operator: WMLOperator, kubectl: Kubectl, k8s_api: k8s.ApiClient, output: Output,
        tweets: list[Tweet], pipeline: Pipeline) -> None:
    env, ns = stream_env, stream_env.namespace
    api = wml(env)
    asset = api.publish_model(asset_meta("Tweets (tf-idf, e2e)"), io.BytesIO(skops.io.dumps(pipeline)))
    kubectl("apply", "-f", "-", input=env.manifest(modelId=asset.id))
    ready(kubectl, ns)
    deployment_id = status(k8s_api, env)["deploymentId"]
    assert status(k8s_api, env)["wmlStatus"] == "RUNNING"
    wide = kubectl("get", "sdep", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-3:] == ["DEPLOYMENT", "MODEL", "LAG"]
    assert wide[1].split()[0] == "tweets"
    assert {asset.id, deployment_id} <= set(wide[1].split())
    entity = api.get_instance_deployment(deployment_id).entity
    assert entity.deployable_asset is not None
    assert entity.deployable_asset.guid == asset.id
    assert entity.model_type == asset.entity.model_type

    held_out = tweets[TRAIN:]
    first = tweet_records(held_out[:60], "a")
    bad = {"m0": {"id": "m0", "text": "I love it, no tweet field though"},  # the schema names `tweet`
           "m1": {"id": "m1", "tweet": None},
           "w0": {"id": "w0", "tweet": 42}}
    send(env, {**first, **bad})
    scored(output, [*first, *bad])

    stopped = tweet_records(held_out[60:100], "b")
    kubectl("patch", "sdep", "tweets", "-n", ns, "--type=merge", "-p", '{"spec": {"state": "STOPPED"}}')
    wait_for("STOPPED and Ready", lambda: status(k8s_api, env).get("wmlStatus") == "STOPPED"
             and (condition(sdep(k8s_api, ns, "tweets"), "Ready") or {}).get("status") == "True")
    send(env, stopped)
    output.drain(4.0)
    assert not any(k.startswith("b") for k in output.by_key), "records were scored while STOPPED"
    kubectl("patch", "sdep", "tweets", "-n", ns, "--type=merge", "-p", '{"spec": {"state": "RUNNING"}}')
    kubectl("wait", "--for=jsonpath={.status.wmlStatus}=RUNNING", "--timeout=60s", "-n", ns, "sdep/tweets")
    assert status(k8s_api, env)["deploymentId"] == deployment_id  # a flip, not a re-create
    later = tweet_records(held_out[100:120], "c")
    send(env, later)
    scored(output, [*first, *bad, *stopped, *later])  # each exactly once, none missing

    sent = {**first, **stopped, **later}
    by_key = {r["id"]: r for r in output.records}
    expected = dict(zip(sent, pipeline.predict([r["tweet"] for r in sent.values()]), strict=True))
    best = dict(zip(sent, pipeline.predict_proba([r["tweet"] for r in sent.values()]).max(axis=1), strict=True))
    for key, record in sent.items():
        out = by_key[key]
        assert {k: out[k] for k in record} == record, "the input's fields are kept"
        assert out["prediction"] in LABELS
        assert out["prediction"] == expected[key], "scored by another model than the published one"
        assert out["probability"] == pytest.approx(best[key], abs=1e-3)
        assert "error" not in out
    assert {by_key[k]["prediction"] for k in sent} == set(LABELS)
    for key in ("m0", "m1"):
        assert (by_key[key]["error"], by_key[key]["field"]) == ("missing_feature", "tweet"), by_key[key]
        assert "prediction" not in by_key[key]
    assert by_key["m0"]["text"] == bad["m0"]["text"]
    assert (by_key["w0"]["error"], by_key["w0"]["field"], by_key["w0"]["tweet"]) == ("wrong_type", "tweet", 42)
    assert "prediction" not in by_key["w0"]

    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")
    assert api.list_instance_deployments() == []
    api.delete_model_asset(asset.id)  # nothing deployed from it is left behind


def test_a_published_model_this_service_cannot_run_stalls_with_the_reason(
        stream_env: StreamEnv, operator: WMLOperator, kubectl: Kubectl, k8s_api: k8s.ApiClient) -> None:
    env, ns = stream_env, stream_env.namespace
    api = wml(env)
    asset = api.publish_model(asset_meta("Tweets (Spark)", framework="mllib"), io.BytesIO(mllib_tar_bytes()))
    kubectl("apply", "-f", "-", input=env.manifest(modelId=asset.id))
    stalled = wait_for("Stalled", lambda: condition(sdep(k8s_api, ns, "tweets"), "Stalled"), timeout=60)
    assert isinstance(stalled, dict)
    assert stalled["reason"] == "ModelNotDeployable"
    message = stalled["message"]
    assert message.startswith(f"spec.modelId: published model {asset.id} cannot be deployed")
    assert "is a mllib-3.5 model" in message
    assert "the built-in engine runs scikit-learn models only. Spark MLlib models run on Spark" in message
    assert message.endswith("(400 model_not_deployable)")
    ready_condition = condition(sdep(k8s_api, ns, "tweets"), "Ready") or {}
    assert (ready_condition.get("status"), ready_condition.get("reason")) == ("False", "ModelNotDeployable")
    assert api.list_instance_deployments() == []
    table = kubectl("get", "sdep", "-n", ns).stdout.splitlines()
    assert "ModelNotDeployable" in table[1].split(), table
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")
