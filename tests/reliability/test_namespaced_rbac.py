"""deploy/components/namespaced-rbac as a user would apply it: the operator reads Secrets in the namespaces it
watches and nowhere else, and that is enough for it to work there.

The RBAC is rendered from the component with kustomize and applied for a ServiceAccount of the test's own
(the session's operator keeps the base's ClusterRoles), with the template namespace `team-a` replaced by the
watched one. The operator then runs under that ServiceAccount's token.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.conftest import Figures, fresh_namespace
from tests.e2e.conftest import StreamEnv, create_secrets
from tests.reliability.checks import condition, list_sdeps
from tests.reliability.conftest import OPERATOR_ENV
from wml_localplatform import KubeInfo
from wml_localplatform.wmloperator import DEPLOY, WMLOperator, service_account_kubeconfig
from wml_localplatform.wmlservice import WMLService

Kubectl = Callable[..., Any]
RBAC_KINDS = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def _render(kubectl: Kubectl, tmp_path: Path) -> list[dict[str, Any]]:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(DEPLOY, overlay)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": [base],
        "components": [f"{base}/components/namespaced-rbac"]}))
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(overlay)).stdout) if d]
    return [d for d in docs if d["kind"] in RBAC_KINDS]


def _retarget(docs: list[dict[str, Any]], suffix: str, operator_ns: str, watched: str) -> list[dict[str, Any]]:
    """The rendered RBAC for a ServiceAccount `wml-stream-operator` in operator_ns, watching `watched`;
    cluster-scoped names get a suffix so they do not replace the session operator's."""
    namespaces = {"wml-stream-operator": operator_ns, "team-a": watched}
    out = []
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"].startswith("Cluster"):
            meta["name"] = f"{meta['name']}-{suffix}"
        else:
            meta["namespace"] = namespaces[meta["namespace"]]
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{suffix}"
        for subject in doc.get("subjects", []):
            subject["namespace"] = operator_ns
        out.append(doc)
    return out


@pytest.fixture
def other_namespace(k8s_api: k8s.ApiClient, dumps: Path) -> Iterator[str]:
    yield from fresh_namespace(k8s_api, dumps, prefix="wso-fault")


@pytest.fixture
def operator_namespace(k8s_api: k8s.ApiClient, dumps: Path) -> Iterator[str]:
    yield from fresh_namespace(k8s_api, dumps, prefix="wso-fault-op")


def test_the_operator_reads_secrets_only_where_it_watches(
        fault_namespace: str, other_namespace: str, operator_namespace: str, kube: KubeInfo, kubectl: Kubectl,
        k8s_api: k8s.ApiClient, make_wml_service: Callable[..., WMLService], tmp_path: Path,
        figures: Figures) -> None:
    watched, other = fault_namespace, other_namespace
    docs = _render(kubectl, tmp_path)
    # The component really removed the base's cluster-wide Secret access.
    for doc in docs:
        if doc["kind"] == "ClusterRole":
            assert not any("secrets" in rule.get("resources", []) for rule in doc["rules"]), doc["metadata"]
    assert any(d["kind"] == "Role" and d["metadata"]["namespace"] == "team-a" for d in docs)
    suffix = uuid.uuid4().hex[:6]
    rbac = _retarget(docs, suffix, operator_namespace, watched)
    kubectl("create", "serviceaccount", "wml-stream-operator", "-n", operator_namespace)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    try:
        kubeconfig = service_account_kubeconfig(kubectl, Path(kube.kubeconfig), tmp_path / "sa.kubeconfig",
                                                namespace=operator_namespace)
        service = make_wml_service(WML_SERVER_RUN_STREAMS="false")
        user = service.add_user()
        for ns in (watched, other):
            create_secrets(k8s_api, ns, service.url, user, None)

        as_operator = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(kubeconfig)))
        assert as_operator.read_namespaced_secret("wml", watched).data
        for forbidden in (lambda: as_operator.read_namespaced_secret("wml", other),
                          lambda: as_operator.list_namespaced_secret(other),
                          lambda: as_operator.list_secret_for_all_namespaces()):
            with pytest.raises(k8s.ApiException) as refused:
                forbidden()
            assert refused.value.status == 403

        # And it is enough: the operator works in the namespace it watches, under exactly this RBAC.
        operator = WMLOperator(tmp_path / "operator", kubeconfig,
                               env={**OPERATOR_ENV, "WML_OPERATOR_NAMESPACES": watched,
                                    # as deploy/operator.yaml sets it from the pod: its copies of logins go there
                                    "WML_OPERATOR_POD_NAMESPACE": operator_namespace})
        operator.start()
        try:
            for ns in (watched, other):
                kubectl("apply", "-f", "-", input=StreamEnv(ns, "in", "out", user, service,
                                                            None).manifest())  # type: ignore[arg-type]
            kubectl("wait", "--for=condition=Ready", "--timeout=120s", "-n", watched, "sdep/tweets")
            untouched = list_sdeps(k8s_api, other)[0]
            assert condition(untouched, "Ready") is None
            assert not untouched["metadata"].get("finalizers")
            forbidden_lines = [line for line in operator.text().splitlines() if "403" in line or "orbidden" in line]
            assert forbidden_lines == [], forbidden_lines[:3]
            kubectl("delete", "sdep", "tweets", "-n", watched, "--timeout=60s")
            kubectl("delete", "sdep", "tweets", "-n", other, "--timeout=60s")
            figures.add("security", check="operator under deploy/components/namespaced-rbac, watching one namespace",
                        result="403 reading or listing Secrets elsewhere",
                        detail="Ready in the watched namespace, the other one untouched, no 403 in its log")
        finally:
            operator.stop()
    finally:
        for doc in rbac:
            if doc["kind"].startswith("Cluster"):
                kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found")
