"""Secrets in a real cluster (issue 15): the operator holds only the ones resources reference, is not woken by the
others, and deletes a resource's stream even when its Secrets went first (namespace deleted while the operator
was down)."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import fresh_namespace
from tests.e2e.conftest import OperatorProcess, accept_only_env, wait_for
from tests.e2e.test_failures import ready, sdep, wml
from wml_localplatform.wmloperator import WMLOperator
from wml_operator.login_copies import PREFIX

Kubectl = Callable[..., Any]
# Unrelated Secrets of 48 KB (a Helm release's size): created, then each updated once. `make test` makes a few
# hundred; bench/operator_secrets.py measures memory and CPU with 10,000.
UNRELATED = int(os.environ.get("WSO_E2E_UNRELATED_SECRETS", "200"))
OPERATOR_NAMESPACE = "wml-stream-operator"


def metrics(operator: OperatorProcess) -> dict[str, float]:
    """The operator's counters, summed over their labels."""
    with urllib.request.urlopen(operator.metrics_url, timeout=10) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def quiet(operator: OperatorProcess) -> dict[str, float]:
    """The operator's counters once its passes have ended: the same over 2 s."""
    def same() -> dict[str, float] | None:
        first = metrics(operator)
        time.sleep(2)
        then = metrics(operator)
        keys = ("wml_operator_reconciles_total", "wml_operator_secret_reads_total")
        return then if all(first.get(k) == then.get(k) for k in keys) else None

    return cast(dict[str, float], wait_for("the operator's passes to end", same, timeout=60))


@pytest.fixture
def noise_namespace(k8s_api: k8s.ApiClient, dumps: Path) -> Iterator[str]:
    """A namespace the operator reconciles nothing in (its name matches no watched pattern)."""
    yield from fresh_namespace(k8s_api, dumps, prefix="wso-noise")


def helm_like(name: str, size: int = 48 * 1024) -> k8s.V1Secret:
    return k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name, labels={"owner": "helm"}), type="helm.sh/release.v1",
                        string_data={"release": "x" * size})


def test_unrelated_secrets_wake_nothing_and_a_rotation_still_recreates(
        namespace: str, noise_namespace: str, operator: OperatorProcess, kubectl: Kubectl, k8s_api: k8s.ApiClient,
        make_wml_service: Callable[..., Any]) -> None:
    env = accept_only_env(namespace, k8s_api, make_wml_service)
    manifest = json.loads(env.manifest())
    # No steady poll during the test: any pass would be one the Secrets caused.
    manifest["metadata"]["annotations"] = {"wmlstream.dev/poll-interval": "3600"}
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    ready(kubectl, namespace)
    first = sdep(k8s_api, namespace, "tweets")["status"]["deploymentId"]
    before = quiet(operator)

    core = k8s.CoreV1Api(k8s_api)
    names = [(noise_namespace if i % 2 else namespace, f"helm-release-{i}") for i in range(UNRELATED)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda nn: core.create_namespaced_secret(nn[0], helm_like(nn[1])), names))
        list(pool.map(lambda nn: core.patch_namespaced_secret(nn[1], nn[0], {"stringData": {"status": "x"}}),
                      names))
    # The operator saw every one of them (its watch counts them), and did nothing about any.
    wait_for("the operator to see the unrelated Secrets",
             lambda: metrics(operator)["wml_operator_secret_events_total"]
             >= before["wml_operator_secret_events_total"] + 2 * UNRELATED, timeout=60)
    after = metrics(operator)
    assert after["wml_operator_reconciles_total"] == before["wml_operator_reconciles_total"]
    assert after["wml_operator_secret_reads_total"] == before["wml_operator_secret_reads_total"]
    assert after["wml_operator_secrets_held"] == before["wml_operator_secrets_held"]

    # A referenced Secret's rotation still reaches the resource: the Kafka Secret changes, the stream is re-created.
    core.patch_namespaced_secret("kafka", namespace, {"stringData": {"kafka_rest_url": "https://rest.invalid"}})
    wait_for("the re-create after the rotation",
             lambda: sdep(k8s_api, namespace, "tweets").get("status", {}).get("deploymentId") not in (None, first),
             timeout=30)
    ready(kubectl, namespace)
    assert metrics(operator)["wml_operator_secret_reads_total"] == before["wml_operator_secret_reads_total"] + 1
    assert [d.id for d in wml(env).list_instance_deployments()] != [first]
    kubectl("delete", "sdep", "tweets", "-n", namespace, "--timeout=60s")
    assert wml(env).list_instance_deployments() == []


@pytest.fixture
def own_operator(operator_kubeconfig: Path, tmp_path: Path) -> Iterator[WMLOperator]:
    """An operator of the test's own, for namespaces wso-gone-*: the test kills it and starts it again."""
    proc = WMLOperator(tmp_path / "operator", operator_kubeconfig,
                       env={"WML_OPERATOR_POLL_FAST_SECONDS": "1", "WML_OPERATOR_POLL_SLOW_SECONDS": "10",
                            "WML_OPERATOR_NAMESPACES": "wso-gone-*", "WML_OPERATOR_SWEEP_SECONDS": "5"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def gone(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def test_a_namespace_deleted_while_the_operator_is_down_goes_with_its_stream(
        own_operator: WMLOperator, kubectl: Kubectl, k8s_api: k8s.ApiClient, dumps: Path,
        make_wml_service: Callable[..., Any]) -> None:
    """Issue 15, case 2: kill -9 of the operator, `kubectl delete namespace`: the namespace controller deletes the
    Secrets at once, the resource waits on its finalizer. The operator starts again: it deletes the WML deployment
    through the copy of the login it kept, the finalizer goes, the namespace goes, and so does the copy."""
    namespaces = fresh_namespace(k8s_api, dumps, prefix="wso-gone")
    ns = next(namespaces)
    try:
        deleted_while_down(ns, own_operator, kubectl, k8s_api, make_wml_service)
    finally:
        next(namespaces, None)  # the fixture's clean-up: dumps what is left; the namespace is gone already


def deleted_while_down(ns: str, own_operator: WMLOperator, kubectl: Kubectl, k8s_api: k8s.ApiClient,
                       make_wml_service: Callable[..., Any]) -> None:
    core = k8s.CoreV1Api(k8s_api)
    env = accept_only_env(ns, k8s_api, make_wml_service)
    kubectl("apply", "-f", "-", input=env.manifest())
    ready(kubectl, ns)
    uid = sdep(k8s_api, ns, "tweets")["metadata"]["uid"]
    assert len(wml(env).list_instance_deployments()) == 1
    copy = core.read_namespaced_secret(PREFIX + uid, OPERATOR_NAMESPACE)
    assert (copy.metadata.annotations or {})["wmlstream.dev/resource"] == f"{ns}/tweets"

    own_operator.kill()
    core.delete_namespace(ns)
    wait_for("the namespace controller to delete the Secrets and mark the resource",
             lambda: not core.list_namespaced_secret(ns).items
             and sdep(k8s_api, ns, "tweets")["metadata"].get("deletionTimestamp"), timeout=60)
    time.sleep(2)
    assert sdep(k8s_api, ns, "tweets")["metadata"]["finalizers"]  # held by its finalizer, nobody to remove it
    assert len(wml(env).list_instance_deployments()) == 1  # nobody deleted the stream

    own_operator.start()
    wait_for("the namespace to be gone", lambda: gone(lambda: core.read_namespace(ns)), timeout=90)
    assert wml(env).list_instance_deployments() == []
    wait_for("the copy of the login to go",
             lambda: gone(lambda: core.read_namespaced_secret(PREFIX + uid, OPERATOR_NAMESPACE)), timeout=30)
    assert "CannotDelete" not in own_operator.text()
