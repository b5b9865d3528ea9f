"""FAILED streams and restartPolicy, adoption, deletion while WML is down, the operator's metrics."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import MODEL, OperatorProcess, StreamEnv, accept_only_env, wait_for
from tests.e2e.test_behaviours import ready, wml
from tests.e2e.test_lifecycle import condition, sdep
from wml_api import NotFound
from wml_api.models import DeploymentCreate, KafkaConnection, SparkServiceInstance, StreamInput, StreamOutput

Kubectl = Callable[..., Any]


def test_failed_stream_is_restarted_with_backoff_until_it_runs(stream_env: StreamEnv, operator: OperatorProcess,
                                                               kubectl: Kubectl, k8s_api: k8s.ApiClient) -> None:
    env, ns = stream_env, stream_env.namespace
    missing = f"not-yet-{ns}"
    manifest = json.loads(env.manifest())
    manifest["spec"]["output"]["topic"] = missing
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    failed = wait_for("Ready=False with WML's reason", lambda: (
        (c := condition(sdep(k8s_api, ns, "tweets"), "Ready")) and c["status"] == "False"
        and sdep(k8s_api, ns, "tweets")["status"].get("wmlStatus") == "FAILED" and c), timeout=90)
    assert isinstance(failed, dict)
    assert missing in failed["message"]
    wait_for("a restart", lambda: sdep(k8s_api, ns, "tweets")["status"].get("restartCount", 0) >= 1, timeout=60)
    events = json.loads(kubectl("get", "events", "-n", ns, "--field-selector", "reason=Restarting",
                                "-o", "json").stdout)["items"]
    assert events
    # The missing topic appears: a later restart succeeds and the resource becomes Ready by itself.
    admin = AdminClient(env.kafka.client_config())
    admin.create_topics([NewTopic(missing, num_partitions=1, replication_factor=1)])[missing].result(30)
    try:
        ready(kubectl, ns, timeout=150)
        assert sdep(k8s_api, ns, "tweets")["status"]["wmlStatus"] == "RUNNING"
    finally:
        kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")
        admin.delete_topics([missing])[missing].result(30)


def test_restart_policy_never_stalls(stream_env: StreamEnv, operator: OperatorProcess, kubectl: Kubectl,
                                     k8s_api: k8s.ApiClient) -> None:
    env, ns = stream_env, stream_env.namespace
    manifest = json.loads(env.manifest(restartPolicy="Never"))
    manifest["spec"]["input"]["topic"] = "no-such-input-topic"
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    stalled = wait_for("Stalled Failed", lambda: condition(sdep(k8s_api, ns, "tweets"), "Stalled"), timeout=90)
    assert isinstance(stalled, dict)
    assert stalled["reason"] == "Failed"
    assert "no-such-input-topic" in stalled["message"]
    assert sdep(k8s_api, ns, "tweets")["status"].get("restartCount", 0) == 0
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")


def test_adoption_takes_over_an_existing_deployment(stream_env: StreamEnv, operator: OperatorProcess,
                                                    kubectl: Kubectl, k8s_api: k8s.ApiClient) -> None:
    env, ns = stream_env, stream_env.namespace
    conn = KafkaConnection(kafka_brokers_sasl=[env.kafka.bootstrap], user=env.kafka.users[-1].name,
                           password=env.kafka.users[-1].password, security_protocol="SASL_PLAINTEXT")
    spark = SparkServiceInstance.model_validate({"credentials": {
        "tenant_id": "t", "tenant_id_full": "tf", "cluster_master_url": "https://s", "instance_id": "i",
        "tenant_secret": "s", "plan": "p"}})
    existing = wml(env).create_deployment(MODEL, DeploymentCreate(
        name="made by hand", input=StreamInput(connection=conn, source={"topic": env.input_topic}),
        output=StreamOutput(connection=conn, target={"topic": env.output_topic})), spark)
    manifest = json.loads(env.manifest())
    manifest["metadata"]["annotations"] = {"wmlstream.dev/deployment-id": existing.id}
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    ready(kubectl, ns)
    assert sdep(k8s_api, ns, "tweets")["status"]["deploymentId"] == existing.id
    assert [d.id for d in wml(env).list_instance_deployments()] == [existing.id]  # adopted, nothing created
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")
    assert wml(env).list_instance_deployments() == []


def test_operator_metrics(stream_env: StreamEnv, operator: OperatorProcess, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=stream_env.manifest())
    ready(kubectl, stream_env.namespace)
    with urllib.request.urlopen(operator.metrics_url, timeout=10) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    assert 'wml_operator_reconciles_total{result="ok"' in text
    assert "wml_operator_wml_request_seconds_bucket" in text
    assert 'wml_operator_resources{wml_status="RUNNING"}' in text
    assert stream_env.user.password not in text
    kubectl("delete", "sdep", "tweets", "-n", stream_env.namespace, "--timeout=60s")


def delete_passes_waiting_for_wml(operator: OperatorProcess) -> float:
    """How many deletion passes of the operator found WML unavailable (and so were left to be retried)."""
    with urllib.request.urlopen(operator.metrics_url, timeout=10) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "wml_operator_reconciles_total"
               and sample.labels == {"trigger": "delete", "result": "transient"})


def test_deletion_waits_for_wml_and_leaks_nothing(namespace: str, operator: OperatorProcess, kubectl: Kubectl,
                                                  k8s_api: k8s.ApiClient,
                                                  make_wml_service: Callable[..., Any]) -> None:
    env = accept_only_env(namespace, k8s_api, make_wml_service)
    service = env.service
    kubectl("apply", "-f", "-", input=env.manifest())
    ready(kubectl, namespace)
    dep = sdep(k8s_api, namespace, "tweets")["status"]["deploymentId"]
    assert [d.id for d in wml(env).list_instance_deployments()] == [dep]
    before = delete_passes_waiting_for_wml(operator)

    # WML unreachable: the deletion is tried, found impossible for now, and tried again; the finalizer stays.
    service.stop()
    kubectl("delete", "sdep", "tweets", "-n", namespace, "--wait=false")
    waiting = wait_for("a condition saying why deletion waits", lambda: (
        (c := condition(sdep(k8s_api, namespace, "tweets"), "Reconciling")) and c["reason"] == "WMLUnavailable"
        and c), timeout=60)
    assert isinstance(waiting, dict)
    wait_for("a second deletion attempt while WML is down",
             lambda: delete_passes_waiting_for_wml(operator) >= before + 2, timeout=90)
    held = sdep(k8s_api, namespace, "tweets")
    assert held["metadata"].get("deletionTimestamp")
    assert "wmlstream.dev/finalizer" in held["metadata"]["finalizers"]
    assert held["status"]["deploymentId"] == dep

    # WML back: the next attempt deletes the deployment in WML, then the resource goes.
    service.start()
    kubectl("wait", "--for=delete", "--timeout=120s", "-n", namespace, "sdep/tweets")
    with pytest.raises(k8s.ApiException) as gone:
        k8s.CustomObjectsApi(k8s_api).get_namespaced_custom_object(
            "wmlstream.dev", "v1alpha1", namespace, "streamingdeployments", "tweets")
    assert gone.value.status == 404
    with pytest.raises(NotFound):
        wml(env).get_deployment(MODEL, dep)
    assert wml(env).list_instance_deployments() == []
