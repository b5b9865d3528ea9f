"""Issue 18 through the operator: a StreamingDeployment whose Spark Secret names the local standalone master
runs its stream on Spark, end to end, with a STOP/RUN flip and every record read back once (read_committed):
with the built-in VADER model and with a Spark MLlib PipelineModel published through the repository."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from kubernetes import client as k8s

from tests.e2e.conftest import OperatorProcess, StreamEnv, secret_data, wait_for
from tests.e2e.test_lifecycle import Output, condition, produce, sdep
from tests.integration.test_wml_repository_api import meta
from tests.integration.test_wml_service_spark import spark_env
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_localplatform import KafkaInfo, PlatformConfig
from wml_localplatform.wmlservice import WMLService


@pytest.mark.parametrize("model", ["vader", "mllib"])
def test_a_streaming_deployment_on_the_spark_cluster(
        model: str, mllib_archive: Path, namespace: str, k8s_api: k8s.ApiClient, kafka: KafkaInfo,
        kafka_topic: Callable[..., str], make_wml_service: Callable[..., WMLService], spark_master: str,
        platform_config: PlatformConfig,
        operator: OperatorProcess, kubectl: Callable[..., Any]) -> None:
    service = make_wml_service(**spark_env(spark_master, platform_config))
    user = service.add_user()
    data = secret_data(service.url, user, kafka)
    credentials = json.loads(data["spark"]["credentials.json"])
    data["spark"]["credentials.json"] = json.dumps({**credentials, "cluster_master_url": spark_master})
    core = k8s.CoreV1Api(k8s_api)
    for name, values in data.items():
        core.create_namespaced_secret(namespace, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name),
                                                              string_data=values))
    env = StreamEnv(namespace, kafka_topic("tweets", partitions=2), kafka_topic("sentiment", partitions=2), user,
                    service, kafka)
    ns = namespace
    api = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)
    spec: dict[str, str] = {}
    version = None  # the built-in model has no repository version: its records name none
    if model == "mllib":  # a Spark MLlib PipelineModel published as a data scientist shares one
        with mllib_archive.open("rb") as content:
            asset = api.publish_model(meta("Tweets (Spark)", framework="mllib"), content)
        spec["modelId"] = asset.id
        assert asset.entity.latest_version is not None
        version = asset.entity.latest_version.guid
    produce(env, [f"a{i}" for i in range(200)])
    kubectl("apply", "-f", "-", input=env.manifest(**spec))
    waited = kubectl("wait", "--for=condition=Ready", "--timeout=240s", "-n", ns, "sdep/tweets", check=False)
    assert waited.returncode == 0, f"{waited.stderr}\n{operator.text()[-3000:]}"
    deployment_id = sdep(k8s_api, ns, "tweets")["status"]["deploymentId"]
    assert api.get_instance_deployment(deployment_id).entity.runtime_environment == "spark-4.2.0"
    assert (service.dir / "data" / "spark" / deployment_id / "driver.pid").exists()

    out = Output(env)
    try:
        wait_for("200 scored records", lambda: out.drain() >= 200, timeout=180)
        kubectl("patch", "sdep", "tweets", "-n", ns, "--type=merge", "-p", '{"spec": {"state": "STOPPED"}}')
        wait_for("STOPPED and Ready", lambda: (sdep(k8s_api, ns, "tweets")["status"].get("wmlStatus") == "STOPPED"
                                               and (condition(sdep(k8s_api, ns, "tweets"), "Ready") or {}).get(
                                                   "status") == "True"), timeout=120)
        produce(env, [f"b{i}" for i in range(100)])
        bad = {"junk": b"not json", "nofield": b'{"text": "no tweet field"}', "number": b'{"tweet": 42}'}
        if model == "mllib":  # records the model cannot take: error records, as on the built-in engine
            producer = Producer(kafka.client_config())
            for key, value in bad.items():
                producer.produce(env.input_topic, value, key.encode())
            assert producer.flush(30) == 0
        out.drain(3.0)
        assert not any(k.startswith("b") for k in out.by_key), "records were scored while STOPPED"

        kubectl("patch", "sdep", "tweets", "-n", ns, "--type=merge", "-p", '{"spec": {"state": "RUNNING"}}')
        kubectl("wait", "--for=jsonpath={.status.wmlStatus}=RUNNING", "--timeout=240s", "-n", ns, "sdep/tweets")
        extra = list(bad) if model == "mllib" else []
        wait_for("the records sent while stopped", lambda: out.drain() >= 300 + len(extra), timeout=180)
        out.drain(3.0)
        assert sorted(out.by_key) == sorted([f"a{i}" for i in range(200)] + [f"b{i}" for i in range(100)] + extra)
        assert set(out.by_key.values()) == {1}, "a record was scored twice"
        scored = [r for r in out.records if "error" not in r]
        assert {r["prediction"] for r in scored} == {"POSITIVE", "NEGATIVE"}
        assert all(0.5 <= r["probability"] <= 1 and r["tweet"] and r["id"] for r in scored)
        assert {r.get("model_version") for r in scored} == {version}
        assert all("model_version" not in r for r in out.records if "error" in r)  # no model scored those
        errors = sorted(r["error"] for r in out.records if "error" in r)
        assert errors == (["invalid_json", "missing_feature", "wrong_type"] if extra else [])
    finally:
        out.close()

    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=120s")
    assert api.list_instance_deployments() == []
    wait_for("the driver's state removed", lambda: not (service.dir / "data" / "spark" / deployment_id).exists(),
             timeout=120)
