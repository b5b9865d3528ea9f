"""deploy/ against a real kube-apiserver: every object is accepted (schema, RBAC, admission) by a server dry run.

Nothing of deploy/ is created for real, except what a server dry run cannot do without: the namespaces the
namespaced objects go into (a dry-run Namespace is not there for the objects that follow it) and, for the
samples, the CRD (a dry-run CRD serves no resource). Each is created only when missing and removed again.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import kustomize_build, overlay_of_deploy

Kubectl = Callable[..., subprocess.CompletedProcess[str]]  # the `kubectl` fixture of tests/conftest.py

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CRD = "streamingdeployments.wmlstream.dev"
OPERATOR_NAMESPACE = "wml-stream-operator"
TEMPLATE_NAMESPACE = "team-a"  # the one watched namespace components/namespaced-rbac ships as its template

BASE_OBJECTS = {
    "customresourcedefinition.apiextensions.k8s.io/streamingdeployments.wmlstream.dev",
    "customresourcedefinition.apiextensions.k8s.io/publishedmodels.wmlstream.dev",
    "namespace/wml-stream-operator",
    "serviceaccount/wml-stream-operator",
    "clusterrole.rbac.authorization.k8s.io/wml-stream-operator",
    "clusterrole.rbac.authorization.k8s.io/wml-stream-operator-secrets",
    "clusterrolebinding.rbac.authorization.k8s.io/wml-stream-operator",
    "clusterrolebinding.rbac.authorization.k8s.io/wml-stream-operator-secrets",
    "role.rbac.authorization.k8s.io/wml-stream-operator-login-copies",
    "rolebinding.rbac.authorization.k8s.io/wml-stream-operator-login-copies",
    "role.rbac.authorization.k8s.io/wml-stream-operator-leader-election",
    "rolebinding.rbac.authorization.k8s.io/wml-stream-operator-leader-election",
    "deployment.apps/wml-stream-operator",
}
DRY_RUN_LINE = re.compile(r"^(\S+) (created|configured|unchanged) \(server dry run\)$")


def dry_run_objects(stdout: str) -> set[str]:
    """The `kind.group/name` of each line of `kubectl apply --dry-run=server`; any other line fails."""
    names = set()
    for line in stdout.strip().splitlines():
        match = DRY_RUN_LINE.match(line)
        assert match, f"unexpected kubectl output: {line!r}"
        names.add(match.group(1))
    return names




@pytest.fixture
def namespaces_for_dry_run(kubectl: Kubectl) -> Iterator[None]:
    # A server dry run of "Namespace + objects in it" fails with `namespaces "..." not found`: the
    # dry-run Namespace is never stored. So the namespaces exist for real during the test, and the ones
    # this test made are deleted afterwards (waiting, so a later test never meets a Terminating one).
    made = []
    for name in (OPERATOR_NAMESPACE, TEMPLATE_NAMESPACE):
        if kubectl("get", "namespace", name, check=False).returncode != 0:
            kubectl("create", "namespace", name)
            made.append(name)
    yield
    for name in made:
        kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s")


@pytest.fixture
def crd_installed(kubectl: Kubectl) -> Iterator[None]:
    # A StreamingDeployment can be dry-run only once its CRD is really served.
    existed = kubectl("get", "crd", CRD, check=False).returncode == 0
    if not existed:
        kubectl("apply", "--server-side", "-k", str(REPO / "crds"))
    kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=60s")
    yield
    if not existed:
        kubectl("delete", "crd", CRD, "--wait=true", "--timeout=120s")


@pytest.fixture
def overlay(tmp_path: Path) -> Path:
    """A user's overlay of deploy/ with both components."""
    return overlay_of_deploy(tmp_path / "overlay", ["wml-server", "namespaced-rbac"])


def test_the_base_builds_to_the_expected_objects(kubectl: Kubectl) -> None:
    docs = kustomize_build(kubectl, DEPLOY)
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for doc in docs)
    assert kinds == sorted([
        ("CustomResourceDefinition", CRD), ("CustomResourceDefinition", "publishedmodels.wmlstream.dev"),
        ("Namespace", OPERATOR_NAMESPACE), ("ServiceAccount", "wml-stream-operator"),
        ("ClusterRole", "wml-stream-operator"), ("ClusterRole", "wml-stream-operator-secrets"),
        ("ClusterRoleBinding", "wml-stream-operator"), ("ClusterRoleBinding", "wml-stream-operator-secrets"),
        ("Role", "wml-stream-operator-login-copies"), ("RoleBinding", "wml-stream-operator-login-copies"),
        ("Role", "wml-stream-operator-leader-election"), ("RoleBinding", "wml-stream-operator-leader-election"),
        ("Deployment", "wml-stream-operator"),
    ])
    for doc in docs:
        if doc["kind"] in ("ServiceAccount", "Deployment", "Role", "RoleBinding"):
            assert doc["metadata"]["namespace"] == OPERATOR_NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "wml-stream-operator"


def test_the_base_passes_a_server_side_dry_run(kubectl: Kubectl, namespaces_for_dry_run: None) -> None:
    result = kubectl("apply", "--dry-run=server", "-k", str(DEPLOY))
    assert dry_run_objects(result.stdout) == BASE_OBJECTS


def test_the_base_with_both_components(kubectl: Kubectl, overlay: Path, namespaces_for_dry_run: None) -> None:
    docs = {(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"]): doc
            for doc in kustomize_build(kubectl, overlay)}
    # wml-server: the service, its data and the operator's default endpoint.
    for kind, name in (("Deployment", "wml-server"), ("Service", "wml-server"),
                       ("PersistentVolumeClaim", "wml-server-data")):
        assert (kind, OPERATOR_NAMESPACE, name) in docs
    operator = docs[("Deployment", OPERATOR_NAMESPACE, "wml-stream-operator")]
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["WML_OPERATOR_WML_URL"]["value"] == "https://wml-server.wml-stream-operator.svc:9443"
    assert env["WML_OPERATOR_WML_CA_SECRET"]["value"] == f"{OPERATOR_NAMESPACE}/wml-server-tls"
    assert env["WML_OPERATOR_HEALTH_ADDRESS"]["value"] == "0.0.0.0:8080"  # the base's env is kept
    # namespaced-rbac: no cluster-wide Secret access left; a Role where the operator looks instead.
    assert ("ClusterRole", None, "wml-stream-operator-secrets") not in docs
    assert ("ClusterRoleBinding", None, "wml-stream-operator-secrets") not in docs
    assert ("ClusterRole", None, "wml-stream-operator") in docs
    for namespace in (OPERATOR_NAMESPACE, TEMPLATE_NAMESPACE):
        assert ("Role", namespace, "wml-stream-operator-secrets") in docs
        assert ("RoleBinding", namespace, "wml-stream-operator-secrets") in docs
    assert env["WML_OPERATOR_NAMESPACES"]["value"] == TEMPLATE_NAMESPACE

    result = kubectl("apply", "--dry-run=server", "-k", str(overlay))
    assert dry_run_objects(result.stdout) == (BASE_OBJECTS - {
        "clusterrole.rbac.authorization.k8s.io/wml-stream-operator-secrets",
        "clusterrolebinding.rbac.authorization.k8s.io/wml-stream-operator-secrets",
    }) | {
        "deployment.apps/wml-server", "service/wml-server", "persistentvolumeclaim/wml-server-data",
        "role.rbac.authorization.k8s.io/wml-stream-operator-secrets",
        "rolebinding.rbac.authorization.k8s.io/wml-stream-operator-secrets",
    }


def test_the_samples_build(kubectl: Kubectl) -> None:
    docs = kustomize_build(kubectl, DEPLOY / "samples")
    assert sorted((doc["kind"], doc["metadata"]["name"]) for doc in docs) == [
        ("Secret", "kafka-connection"), ("Secret", "spark-credentials"), ("Secret", "wml-credentials"),
        ("StreamingDeployment", "tweet-sentiment"),
    ]
    assert all("namespace" not in doc["metadata"] for doc in docs)


def test_the_samples_are_valid_against_the_crd(kubectl: Kubectl, crd_installed: None, namespace: str) -> None:
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-k", str(DEPLOY / "samples"))
    assert dry_run_objects(result.stdout) == {
        "secret/kafka-connection", "secret/spark-credentials", "secret/wml-credentials",
        "streamingdeployment.wmlstream.dev/tweet-sentiment",
    }


def test_the_dry_run_really_validates(kubectl: Kubectl, crd_installed: None, namespace: str) -> None:
    """The check above could pass by accepting anything: a sample with an undeclared state is refused."""
    (sample,) = yaml.safe_load_all((DEPLOY / "samples" / "wmlstream.dev_v1alpha1_streamingdeployment.yaml")
                                   .read_text())
    sample["spec"]["state"] = "PAUSED"
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(sample),
                     check=False)
    assert result.returncode != 0
    assert "spec.state" in result.stderr
    assert "PAUSED" in result.stderr
