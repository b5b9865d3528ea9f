"""Two operator processes under leader election (issue 20), against the real kube-apiserver, as deploy/ runs them:
the ServiceAccount's token (so deploy/rbac.yaml's Role for the Lease is what allows it), the Lease
wml-stream-operator in the operator's namespace, client-go's durations. Only the leader reconciles; the standby
answers /healthz; kill -9 of the leader -> the standby reconciles within the Lease's duration and a margin; SIGTERM
-> the standby takes over within seconds (the Lease released). Bounds only say "at all, and before X": the figures
are bench/operator_failover.py's.

No WML service is needed: the resource names Secrets that do not exist, so each pass ends at once in a status
with the generation it saw (status.observedGeneration), which is what "reconciled a change" means here.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.conftest import fresh_namespace
from wml_localplatform import KubeInfo
from wml_localplatform.wmloperator import (
    OPERATOR_NAMESPACE,
    WMLOperator,
    install_crd,
    install_rbac,
    service_account_kubeconfig,
)

pytestmark = pytest.mark.integration
PREFIX = "wso-ha"
LEASE = "wml-stream-operator"  # the one name deploy/rbac.yaml's Role allows
GROUP, VERSION, PLURAL = "wmlstream.dev", "v1alpha1", "streamingdeployments"
LEASE_SECONDS = 15.0  # the operator's default
Kubectl = Callable[..., Any]


def manifest(namespace: str, model: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "StreamingDeployment",
            "metadata": {"name": "tweets", "namespace": namespace},
            "spec": {"state": "RUNNING", "modelId": model, "wml": {"credentialsSecretRef": {"name": "absent"}},
                     "sparkCredentialsSecretRef": {"name": "absent", "key": "credentials.json"},
                     "input": {"topic": "tweets", "connectionSecretRef": {"name": "absent"}},
                     "output": {"topic": "scores", "connectionSecretRef": {"name": "absent"}}}}


class Pair:
    """Two operators on one Lease; the resource `tweets` in `namespace`."""

    def __init__(self, base: Path, kubeconfig: Path, namespace: str, custom: k8s.CustomObjectsApi) -> None:
        self.namespace, self.custom = namespace, custom
        env = {"WML_OPERATOR_LEADER_ELECTION": "true", "WML_OPERATOR_POD_NAMESPACE": OPERATOR_NAMESPACE,
               "WML_OPERATOR_NAMESPACES": namespace, "WML_OPERATOR_POLL_FAST_SECONDS": "1"}
        self.first = WMLOperator(base / "first", kubeconfig, env=env)
        self.second = WMLOperator(base / "second", kubeconfig, env=env)

    def change(self, model: str) -> int:
        """A new spec (a new generation): what the leader must reconcile. Returns that generation."""
        body = self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, "tweets",
                                                          {"spec": {"modelId": model}})
        return int(body["metadata"]["generation"])

    def reconciled(self, generation: int, within: float) -> float:
        """Seconds until status.observedGeneration reached `generation`; fails after `within`."""
        start = time.monotonic()
        while time.monotonic() - start < within:
            body = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, "tweets")
            if (body.get("status") or {}).get("observedGeneration") == generation:
                return time.monotonic() - start
            time.sleep(0.2)
        raise AssertionError(f"generation {generation} not reconciled in {within} s:\n"
                             f"first:\n{self.first.text()[-3000:]}\nsecond:\n{self.second.text()[-3000:]}")


def wait_log(operator: WMLOperator, text: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while text not in operator.text():
        assert time.monotonic() < deadline, f"no {text!r} in its log:\n{operator.text()[-3000:]}"
        time.sleep(0.1)


@pytest.fixture
def pair(kubectl: Kubectl, kube: KubeInfo, k8s_api: k8s.ApiClient, dumps: Path, tmp_path: Path) -> Iterator[Pair]:
    install_crd(kubectl)
    install_rbac(kubectl)
    kubeconfig = service_account_kubeconfig(kubectl, Path(kube.kubeconfig), tmp_path / "operator.kubeconfig")
    custom = k8s.CustomObjectsApi(k8s_api)
    leases = k8s.CoordinationV1Api(k8s_api)
    for namespace in fresh_namespace(k8s_api, dumps, prefix=PREFIX):
        pair = Pair(tmp_path, kubeconfig, namespace, custom)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest(namespace, "m-1"))
        try:
            pair.first.start()
            wait_log(pair.first, "acquired the Lease")
            pair.second.start()
            wait_log(pair.second, "standing by for the Lease")
            yield pair
        finally:
            # The finalizer needs a running operator: the resource goes first, while one still leads.
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "tweets")
            deadline = time.monotonic() + LEASE_SECONDS + 60
            while custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            pair.first.stop()
            pair.second.stop()
            # The next test's first operator must not wait for a dead holder's Lease to expire.
            try:
                leases.delete_namespaced_lease(LEASE, OPERATOR_NAMESPACE)
            except k8s.ApiException as exc:
                if exc.status != 404:
                    raise


def test_only_the_leader_reconciles_and_a_kill_9_hands_over_within_the_lease(pair: Pair) -> None:
    pair.reconciled(pair.change("m-2"), within=60)
    # The standby answers its liveness probe, and runs nothing else: no kopf, no handler, no Lease.
    with urllib.request.urlopen(f"http://127.0.0.1:{pair.second.health_port}/healthz", timeout=5) as response:
        assert response.status == 200
    standby_log = pair.second.text()
    assert "acquired the Lease" not in standby_log
    assert "Handler" not in standby_log
    assert "kopf" not in standby_log

    pair.first.kill()
    generation = pair.change("m-3")
    pair.reconciled(generation, within=LEASE_SECONDS + 30)
    wait_log(pair.second, "acquired the Lease", within=1)


def test_sigterm_releases_the_lease_and_the_standby_takes_over_within_seconds(pair: Pair) -> None:
    pair.reconciled(pair.change("m-2"), within=60)
    pair.first.stop()  # SIGTERM, and waits until it exited
    assert "released the Lease" in pair.first.text()
    generation = pair.change("m-3")
    # Well below the Lease's 15 s: the standby did not wait for it to expire.
    pair.reconciled(generation, within=LEASE_SECONDS - 5)


def test_a_leader_that_cannot_renew_exits(pair: Pair, k8s_api: k8s.ApiClient) -> None:
    """Another holder written into the Lease (as after a partition healed, when a standby took it): the leader's
    renewals fail from then on, and it exits within its renew deadline instead of acting beside the other."""
    leases = k8s.CoordinationV1Api(k8s_api)
    leases.patch_namespaced_lease(LEASE, OPERATOR_NAMESPACE, {"spec": {"holderIdentity": "another-replica"}})
    deadline = time.monotonic() + 10 + 30  # the renew deadline and a margin
    while pair.first.running():
        assert time.monotonic() < deadline, f"the leader still runs:\n{pair.first.text()[-3000:]}"
        time.sleep(0.2)
    assert "lost the Lease" in pair.first.text()
    # The standby takes the Lease once "another-replica" has not renewed it for its duration, and reconciles.
    pair.reconciled(pair.change("m-2"), within=LEASE_SECONDS + 30)


def test_a_standby_stopped_by_sigterm_leaves_gently_and_the_leader_keeps_leading(pair: Pair, tmp_path: Path) -> None:
    third = WMLOperator(tmp_path / "third", pair.first.kubeconfig, env=pair.first.env)
    third.start()
    wait_log(third, "standing by for the Lease")
    third.stop()  # SIGTERM, and waits until it exited
    log = third.text()
    assert "stopped before leading" in log
    assert "acquired the Lease" not in log
    pair.reconciled(pair.change("m-2"), within=60)
    assert "acquired the Lease" not in pair.second.text()
