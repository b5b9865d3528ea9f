"""The operator's numbered behaviours on the real chain: bad input, Secret rotation, drift, pause, orphan."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from tests.e2e.conftest import OperatorProcess, StreamEnv, wait_for
from tests.e2e.test_lifecycle import condition, sdep
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials

Kubectl = Callable[..., Any]


def wml(env: StreamEnv) -> WMLClient:
    return WMLClient(env.service.url, WMLCredentials(env.user.username, env.user.password), env.user.instance_id)


def ready(kubectl: Kubectl, ns: str, name: str = "tweets", timeout: int = 120) -> None:
    kubectl("wait", "--for=condition=Ready", f"--timeout={timeout}s", "-n", ns, f"sdep/{name}")


def test_missing_secret_stalls_then_recovers(stream_env: StreamEnv, operator: OperatorProcess, kubectl: Kubectl,
                                             k8s_api: k8s.ApiClient) -> None:
    env, ns = stream_env, stream_env.namespace
    core = k8s.CoreV1Api(k8s_api)
    spark = core.read_namespaced_secret("spark", ns)
    core.delete_namespaced_secret("spark", ns)
    kubectl("apply", "-f", "-", input=env.manifest())
    stalled = wait_for("Stalled SecretNotFound", lambda: (condition(sdep(k8s_api, ns, "tweets"), "Stalled") or {}))
    assert isinstance(stalled, dict)
    assert stalled["reason"] == "SecretNotFound"
    assert f"Secret {ns}/spark does not exist" in stalled["message"]
    assert "spec.sparkCredentialsSecretRef" in stalled["message"]
    assert wml(env).list_instance_deployments() == []  # bad input never reaches WML
    # The Secret appears later: picked up by the watch, without touching the resource.
    core.create_namespaced_secret(ns, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="spark"), data=spark.data))
    ready(kubectl, ns)
    assert condition(sdep(k8s_api, ns, "tweets"), "Stalled") is None
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")


def test_secret_rotation_recreates_and_deletion_behind_our_back_is_repaired(
        stream_env: StreamEnv, operator: OperatorProcess, kubectl: Kubectl, k8s_api: k8s.ApiClient) -> None:
    env, ns = stream_env, stream_env.namespace
    kubectl("apply", "-f", "-", input=env.manifest())
    ready(kubectl, ns)
    first = sdep(k8s_api, ns, "tweets")["status"]["deploymentId"]

    spark = json.loads(kubectl("get", "secret", "spark", "-n", ns, "-o", "json").stdout)
    rotated = {"tenant_id": "t1", "tenant_id_full": "t1-full", "cluster_master_url": "https://spark.invalid",
               "instance_id": "rotated", "tenant_secret": "rotated-secret", "plan": "standard"}
    spark["data"] = None
    spark["stringData"] = {"credentials.json": json.dumps(rotated)}
    kubectl("apply", "-f", "-", input=json.dumps(spark))
    second = wait_for("a new deployment after the rotation",
                      lambda: (sdep(k8s_api, ns, "tweets")["status"].get("deploymentId") or first) != first
                      and sdep(k8s_api, ns, "tweets")["status"]["deploymentId"], timeout=60)
    assert [d.id for d in wml(env).list_instance_deployments()] == [second]
    events = kubectl("get", "events", "-n", ns, "--field-selector", "reason=SpecChanged", "-o", "json").stdout
    assert json.loads(events)["items"], "no SpecChanged event for the re-creation"
    assert "rotated-secret" not in kubectl("get", "events", "-n", ns, "-o", "json").stdout
    ready(kubectl, ns)

    # Someone deletes the deployment in WML: the operator creates a new one and says so.
    wml(env).delete_instance_deployment(str(second))
    third = wait_for("a re-created deployment",
                     lambda: sdep(k8s_api, ns, "tweets")["status"].get("deploymentId") not in (second, None)
                     and sdep(k8s_api, ns, "tweets")["status"]["deploymentId"], timeout=60)
    ready(kubectl, ns)
    assert [d.id for d in wml(env).list_instance_deployments()] == [third]
    events = kubectl("get", "events", "-n", ns, "--field-selector", "reason=DeletedBehindOurBack", "-o",
                     "json").stdout
    assert json.loads(events)["items"]
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")
    assert wml(env).list_instance_deployments() == []


def test_stopped_behind_our_back_is_started_again(stream_env: StreamEnv, operator: OperatorProcess,
                                                   kubectl: Kubectl, k8s_api: k8s.ApiClient) -> None:
    env, ns = stream_env, stream_env.namespace
    kubectl("apply", "-f", "-", input=env.manifest())
    ready(kubectl, ns)
    dep = sdep(k8s_api, ns, "tweets")["status"]["deploymentId"]
    from tests.e2e.conftest import MODEL

    wml(env).set_deployment_status(MODEL, dep, "STOPPED")
    wait_for("StoppedBehindOurBack event", lambda: json.loads(kubectl(
        "get", "events", "-n", ns, "--field-selector", "reason=StoppedBehindOurBack", "-o", "json").stdout)["items"],
        timeout=60)
    wait_for("RUNNING again", lambda: wml(env).get_instance_deployment(dep).status == "RUNNING", timeout=60)
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")


def test_paused_writes_nothing_and_orphan_leaves_the_deployment(stream_env: StreamEnv, operator: OperatorProcess,
                                                                 kubectl: Kubectl, k8s_api: k8s.ApiClient) -> None:
    env, ns = stream_env, stream_env.namespace
    kubectl("apply", "-f", "-", input=env.manifest(deletionPolicy="Orphan"))
    ready(kubectl, ns)
    dep = sdep(k8s_api, ns, "tweets")["status"]["deploymentId"]
    kubectl("annotate", "sdep", "tweets", "-n", ns, "wmlstream.dev/reconcile=paused")
    kubectl("patch", "sdep", "tweets", "-n", ns, "--type=merge", "-p", '{"spec": {"state": "STOPPED"}}')
    wait_for("Paused reason", lambda: (condition(sdep(k8s_api, ns, "tweets"), "Ready") or {}).get("reason")
             == "Paused", timeout=60)
    assert wml(env).get_instance_deployment(dep).status == "RUNNING"  # no WML write while paused
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")  # deletion still works
    assert [d.id for d in wml(env).list_instance_deployments()] == [dep]  # Orphan: left running
    wml(env).delete_instance_deployment(dep)


def test_other_namespaces_are_left_alone(stream_env: StreamEnv, operator: OperatorProcess, kubectl: Kubectl,
                                         k8s_api: k8s.ApiClient) -> None:
    """The operator runs with WML_OPERATOR_NAMESPACES=wso-test-*: a resource elsewhere is not touched."""
    import time
    import uuid

    other = f"wso-other-{uuid.uuid4().hex[:6]}"
    core = k8s.CoreV1Api(k8s_api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=other)))
    try:
        manifest = json.loads(stream_env.manifest())
        manifest["metadata"]["namespace"] = other
        kubectl("apply", "-f", "-", input=json.dumps(manifest))
        kubectl("apply", "-f", "-", input=stream_env.manifest())  # the same in a watched namespace
        ready(kubectl, stream_env.namespace)
        time.sleep(3)  # several timer ticks of the operator
        untouched = sdep(k8s_api, other, "tweets")
        assert "status" not in untouched
        assert not untouched["metadata"].get("finalizers")
        assert len(wml(stream_env).list_instance_deployments()) == 1
        kubectl("delete", "sdep", "tweets", "-n", stream_env.namespace, "--timeout=60s")
    finally:
        core.delete_namespace(other)
