"""Streams of users' models through the real service and broker: records mapped to features by name, scored in
the deployment's worker process; records the model cannot take go out with an error code, the stream goes on."""

from __future__ import annotations

import io
import json
import pickle
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import skops.io
from confluent_kafka import Consumer, Producer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tests.integration.test_wml_repository_api import Raw
from tests.integration.test_wml_service_api import spark
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_api.models import DeploymentCreate, KafkaConnection, StreamInput, StreamOutput
from wml_api.repository import Framework, ModelAssetCreate
from wml_localplatform import KafkaInfo
from wml_localplatform.wmlservice import WMLService

TEXTS = ["I love it", "great day", "so happy", "awful", "I hate this", "terrible news"] * 3
LABELS = (["POSITIVE"] * 3 + ["NEGATIVE"] * 3) * 3


def schema(**fields: str) -> dict[str, Any]:
    return {"type": "struct", "fields": [{"name": n, "type": t} for n, t in fields.items()]}


def publish(api: WMLClient, content: bytes, fields: dict[str, Any], name: str = "m") -> str:
    return api.publish_model(ModelAssetCreate(name=name, framework=Framework(name="scikit-learn"),
                                              input_data_schema=fields), io.BytesIO(content)).id


def deploy(api: WMLClient, kafka: KafkaInfo, model_id: str, source: str, target: str) -> str:
    user = kafka.users[-1]
    conn = KafkaConnection(kafka_brokers_sasl=[kafka.bootstrap], user=user.name, password=user.password,
                           security_protocol="SASL_PLAINTEXT")
    did = api.create_deployment(model_id, DeploymentCreate(
        name="s", input=StreamInput(connection=conn, source={"topic": source}),
        output=StreamOutput(connection=conn, target={"topic": target})), spark()).id
    running(api, did)
    return did


def running(api: WMLClient, did: str) -> None:
    deadline = time.monotonic() + 90
    while (status := api.get_instance_deployment(did).status) != "RUNNING":
        assert status != "FAILED", api.get_instance_deployment(did).failure_message
        assert time.monotonic() < deadline, f"still {status}"
        time.sleep(0.3)


def send(kafka: KafkaInfo, topic: str, records: dict[str, Any]) -> None:
    producer = Producer(kafka.client_config())
    for key, value in records.items():
        producer.produce(topic, value if isinstance(value, bytes) else json.dumps(value).encode(), key.encode())
    assert producer.flush(30) == 0


def read(kafka: KafkaInfo, topic: str, count: int, timeout: float = 60) -> dict[str, dict[str, Any]]:
    consumer = Consumer(kafka.client_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                                               "isolation.level": "read_committed"}))
    consumer.subscribe([topic])
    seen: dict[str, dict[str, Any]] = {}
    keys: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(keys) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                keys.append(msg.key().decode())
                seen[keys[-1]] = json.loads(msg.value())
        msg = consumer.poll(2.0)  # anything more would be a record scored twice
        assert msg is None or msg.error(), f"more than {count} records: {msg.value()!r}"
    finally:
        consumer.close()
    assert len(keys) == len(seen) == count, f"{len(keys)} records, {len(seen)} distinct, {count} expected"
    return seen


def client(service: WMLService) -> WMLClient:
    user = service.add_user()
    return WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)


def test_a_text_model_scores_tweets_and_refuses_records_it_cannot_take(
        wml_service: WMLService, kafka: KafkaInfo, kafka_topic: Callable[..., str]) -> None:
    api = client(wml_service)
    pipeline = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())]).fit(TEXTS, LABELS)
    model_id = publish(api, skops.io.dumps(pipeline), schema(tweet="string"))
    source, target = kafka_topic("in"), kafka_topic("out")
    did = deploy(api, kafka, model_id, source, target)
    send(kafka, source, {"good": {"id": 1, "tweet": "what a great day"}, "bad": {"id": 2, "tweet": "awful, I hate it"},
                         "text-only": {"id": 3, "text": "the schema names tweet"}, "null": {"tweet": None},
                         "number": {"tweet": 42}, "list": [1, 2], "garbage": b"\xffnot json"})
    out = read(kafka, target, 7)
    expected = pipeline.predict(["what a great day", "awful, I hate it"])
    assert out["good"]["prediction"] == expected[0]
    assert out["bad"]["prediction"] == expected[1]
    assert out["good"]["id"] == 1
    assert out["good"]["tweet"] == "what a great day"
    best = float(np.max(pipeline.predict_proba(["what a great day"])[0]))
    assert out["good"]["probability"] == round(best, 4)
    assert out["text-only"] == {"id": 3, "text": "the schema names tweet", "error": "missing_feature", "field": "tweet"}
    assert out["null"]["error"] == "missing_feature"
    assert out["number"] == {"tweet": 42, "error": "wrong_type", "field": "tweet", "expected": "string"}
    assert out["list"]["error"] == "not_an_object"
    assert out["garbage"]["error"] == "invalid_json"
    api.delete_instance_deployment(did)


def test_a_numeric_model_maps_fields_by_name_and_type(wml_service: WMLService, kafka: KafkaInfo,
                                                      kafka_topic: Callable[..., str]) -> None:
    api = client(wml_service)
    x = np.array([[0.0, 0], [1.0, 0], [0.0, 1], [5.0, 5], [6.0, 5], [5.0, 6]])
    model = LogisticRegression().fit(x, [0, 0, 0, 1, 1, 1])
    model_id = publish(api, pickle.dumps(model), schema(size="double", rooms="integer"))
    source, target = kafka_topic("in"), kafka_topic("out")
    did = deploy(api, kafka, model_id, source, target)
    send(kafka, source, {"small": {"rooms": 0, "size": 0.5, "extra": "kept"}, "big": {"size": 6, "rooms": 6},
                         "bool": {"size": 1.0, "rooms": True}, "str": {"size": "big", "rooms": 1}})
    out = read(kafka, target, 4)
    assert out["small"]["prediction"] == 0
    assert out["small"]["extra"] == "kept"
    assert out["big"]["prediction"] == 1
    assert 0.5 <= out["big"]["probability"] <= 1
    assert out["bool"] == {"size": 1.0, "rooms": True, "error": "wrong_type", "field": "rooms", "expected": "integer"}
    assert out["str"]["error"] == "wrong_type"
    api.delete_instance_deployment(did)


def test_a_model_that_raises_on_some_records_sends_those_out_with_an_error(
        wml_service: WMLService, kafka: KafkaInfo, kafka_topic: Callable[..., str]) -> None:
    # json.loads as the preprocessor: a tweet that is a JSON string literal is scored, any other one raises.
    api = client(wml_service)
    texts = [json.dumps(t) for t in TEXTS]
    pipeline = Pipeline([("tfidf", TfidfVectorizer(preprocessor=json.loads)), ("clf", LogisticRegression())])
    model_id = publish(api, pickle.dumps(pipeline.fit(texts, LABELS)), schema(tweet="string"))
    source, target = kafka_topic("in"), kafka_topic("out")
    did = deploy(api, kafka, model_id, source, target)
    records = {f"ok-{i}": {"tweet": json.dumps("so happy")} for i in range(5)}
    records |= {f"raises-{i}": {"tweet": "not a JSON string"} for i in range(5)}
    send(kafka, source, records)
    out = read(kafka, target, 10)
    for i in range(5):
        assert out[f"ok-{i}"]["prediction"] == "POSITIVE"
        assert out[f"raises-{i}"]["error"] == "model_error"
        assert "JSONDecodeError" in out[f"raises-{i}"]["message"]
    assert api.get_instance_deployment(did).status == "RUNNING"
    api.delete_instance_deployment(did)


def test_a_user_model_s_stream_resumes_after_a_restart_and_a_kill_9_exactly_once(
        make_wml_service: Callable[..., WMLService], kafka: KafkaInfo, kafka_topic: Callable[..., str]) -> None:
    service = make_wml_service(WML_SERVER_KAFKA_UNREACHABLE_TIMEOUT="15")
    api = client(service)
    pipeline = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())]).fit(TEXTS, LABELS)
    model_id = publish(api, skops.io.dumps(pipeline), schema(tweet="string"))
    source, target = kafka_topic("in", partitions=2), kafka_topic("out")
    did = deploy(api, kafka, model_id, source, target)
    sent = 0
    for restart in (service.stop, service.kill):
        send(kafka, source, {f"k{sent + i}": {"tweet": f"so happy {sent + i}"} for i in range(300)})
        sent += 300
        restart()  # mid-stream: part of what was sent is scored, part waits
        service.start()  # same port and signing key: the client and its token go on
        deadline = time.monotonic() + 90
        while (status := api.get_instance_deployment(did).status) != "RUNNING":
            assert status != "FAILED", api.get_instance_deployment(did).failure_message
            assert time.monotonic() < deadline, f"still {status}"
            time.sleep(0.3)
    out = read(kafka, target, sent, timeout=120)  # each once: read() fails on a record more
    assert set(out) == {f"k{i}" for i in range(sent)}
    assert all(r["prediction"] == "POSITIVE" for r in out.values())
    api.delete_instance_deployment(did)  # and its consumer group, which the session checks is gone


def test_output_records_name_the_pinned_version_and_a_new_version_only_reaches_new_deployments(
        make_wml_service: Callable[..., WMLService], kafka: KafkaInfo, kafka_topic: Callable[..., str]) -> None:
    """Issue 19: each record says which model version scored it. Publishing v2 moves the model's latest; the
    deployment made on v1 goes on scoring with v1's content (also once a restarted service resumes it), and a
    deployment made afterwards runs v2. Each version has labels of its own, so the predictions prove which
    content scored, not only which id was written."""
    service = make_wml_service()
    user = service.add_user()
    api = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)

    def trained(version: str) -> bytes:
        labels = [f"{label}-{version}" for label in LABELS]
        return skops.io.dumps(Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())])
                              .fit(TEXTS, labels))

    asset = api.publish_model(ModelAssetCreate(name="versions", framework=Framework(name="scikit-learn"),
                                               input_data_schema=schema(tweet="string")), io.BytesIO(trained("v1")))
    assert asset.entity.latest_version is not None
    v1 = asset.entity.latest_version.guid
    in1, out1, in2, out2 = kafka_topic("in"), kafka_topic("out"), kafka_topic("in"), kafka_topic("out")
    first = deploy(api, kafka, asset.id, in1, out1)

    def check(topic: str, count: int, version: str, suffix: str) -> None:
        out = read(kafka, topic, count)
        scored = [r for key, r in out.items() if key != "refused"]
        assert {r["model_version"] for r in scored} == {version}
        assert {r["prediction"] for r in scored} == {f"POSITIVE-{suffix}"}
        assert out["refused"] == {"text": "no tweet", "error": "missing_feature", "field": "tweet"}  # no version

    send(kafka, in1, {"a0": {"tweet": "so happy"}, "refused": {"text": "no tweet"}})
    check(out1, 2, v1, "v1")

    raw = Raw(service, user)
    created = raw("POST", f"/v3/ml_assets/models/{asset.id}/versions")
    assert created.status_code == 201, created.text
    v2 = created.json()["metadata"]["guid"]
    uploaded = raw.upload(asset.id, v2, trained("v2"))
    assert uploaded.status_code == 200, uploaded.text
    latest = api.get_published_model(asset.id).entity.latest_version
    assert latest is not None
    assert latest.guid == v2 != v1

    send(kafka, in1, {"a1": {"tweet": "great day"}})
    check(out1, 3, v1, "v1")  # the running deployment: still v1's content and id
    second = deploy(api, kafka, asset.id, in2, out2)
    send(kafka, in2, {"b0": {"tweet": "so happy"}, "refused": {"text": "no tweet"}})
    check(out2, 2, v2, "v2")

    service.stop()
    service.start()  # each deployment is resumed from the store: its own version's content is loaded again
    running(api, first)
    running(api, second)
    send(kafka, in1, {"a2": {"tweet": "I love it"}})
    send(kafka, in2, {"b1": {"tweet": "I love it"}})
    check(out1, 4, v1, "v1")
    check(out2, 3, v2, "v2")
    api.delete_instance_deployment(first)
    api.delete_instance_deployment(second)
