"""deploy/ applied to a real kube-apiserver: what the operator's ServiceAccount may and may not do, and which pods
the namespace's Pod Security level admits.

RBAC: the ServiceAccount, ClusterRoles and ClusterRoleBindings are rendered from deploy/ with `kubectl kustomize`
and applied for real, for a ServiceAccount of the same name in the test's namespace (the cluster-scoped names
get a suffix, so the session's e2e operator keeps the base's own). The apiserver's authorizer then answers
SubjectAccessReviews for the identity the operator's pod runs as (the Deployment's serviceAccountName, with
the groups a ServiceAccount token carries).

Pods: the rendered Namespace's Pod Security labels on a namespace of the test's, and each pod template of deploy/
(with the wml-server component) sent as a Pod in a server dry run: the apiserver's PodSecurity admission
accepts them, and refuses a weakened one. tests/integration/test_deploy_dry_run.py checks that every object is
accepted as such; tests/reliability/test_namespaced_rbac.py checks the namespaced-rbac component at work;
tests/integration/test_published_model.py runs the operator with this ServiceAccount's token (a PublishedModel from
a ConfigMap reaches Ready with `configmaps: get` alone).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.support import kustomize_build, overlay_of_deploy

Kubectl = Callable[..., subprocess.CompletedProcess[str]]  # the `kubectl` fixture of tests/conftest.py

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
GROUP = "wmlstream.dev"
RBAC_KINDS = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}




@dataclass(frozen=True)
class Identity:
    namespace: str
    name: str

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    @property
    def groups(self) -> list[str]:
        # What the apiserver's token authenticator gives a ServiceAccount: a binding to any of them counts.
        return ["system:serviceaccounts", f"system:serviceaccounts:{self.namespace}", "system:authenticated"]


def allowed(k8s_api: k8s.ApiClient, who: Identity, verb: str, resource: str, *, group: str = "",
            subresource: str = "", namespace: str = "") -> bool:
    """The apiserver's RBAC authorizer's answer for `who` (namespace "" = cluster-wide)."""
    review = k8s.V1SubjectAccessReview(spec=k8s.V1SubjectAccessReviewSpec(
        user=who.user, groups=who.groups,
        resource_attributes=k8s.V1ResourceAttributes(verb=verb, group=group, resource=resource,
                                                     subresource=subresource or None,
                                                     namespace=namespace or None)))
    answer = k8s.AuthorizationV1Api(k8s_api).create_subject_access_review(review)
    return bool(answer.status.allowed)


@pytest.fixture
def operator_identity(kubectl: Kubectl, namespace: str) -> Iterator[Identity]:
    """deploy/'s ServiceAccount and RBAC applied for real, the ServiceAccount moved into the test's namespace;
    the identity the operator's pod runs as."""
    docs = kustomize_build(kubectl, DEPLOY)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "wml-stream-operator"]
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    pod_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    operator_ns = account["metadata"]["namespace"]
    suffix = uuid.uuid4().hex[:6]
    applied = [{**account, "metadata": {**account["metadata"], "namespace": namespace}}]
    for doc in docs:
        if doc["kind"] not in RBAC_KINDS:
            continue
        if doc["kind"].startswith("Cluster"):
            doc["metadata"]["name"] += f"-{suffix}"
            if "roleRef" in doc:
                doc["roleRef"]["name"] += f"-{suffix}"
        else:  # a grant in the operator's own namespace: the test's namespace stands for it
            assert doc["metadata"]["namespace"] == operator_ns, doc["metadata"]
            doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", ()):
            if subject.get("namespace") == operator_ns:
                subject["namespace"] = namespace
        applied.append(doc)
    assert any(d["kind"] == "ClusterRoleBinding" for d in applied)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(applied))
    try:
        yield Identity(namespace, pod_account)
    finally:
        for doc in applied:
            if doc["kind"].startswith("Cluster"):
                kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found")


# (verb, group, resource, subresource) the operator needs, in any namespace and across all of them.
NEEDED = [
    *((v, GROUP, "streamingdeployments", "") for v in ("get", "list", "watch", "patch")),
    ("patch", GROUP, "streamingdeployments", "status"),
    ("update", GROUP, "streamingdeployments", "status"),
    ("update", GROUP, "streamingdeployments", "finalizers"),
    *((v, GROUP, "publishedmodels", "") for v in ("get", "list", "watch", "patch")),
    ("patch", GROUP, "publishedmodels", "status"),
    ("update", GROUP, "publishedmodels", "status"),
    ("update", GROUP, "publishedmodels", "finalizers"),
    ("get", "", "configmaps", ""),  # a PublishedModel's spec.source.configMapRef, by name
    *((v, "", "secrets", "") for v in ("get", "list", "watch")),
    ("create", "", "events", ""),
    ("patch", "", "events", ""),
    ("create", "events.k8s.io", "events", ""),
]
# In its own namespace only: the copies of deletion logins (wml_operator.login_copies).
NEEDED_OWN = [(v, "", "secrets", "") for v in ("get", "list", "create", "update", "delete")]
# kopf's cluster-wide observation of namespaces and CRDs (list + watch; cluster-scoped resources).
NEEDED_CLUSTER = [(v, g, r, "") for v in ("list", "watch")
                  for g, r in (("", "namespaces"), ("apiextensions.k8s.io", "customresourcedefinitions"))]
# What it must never do: create or delete what users declare, write Secrets, touch namespaces, CRDs, workloads
# or RBAC, or act as someone else.
REFUSED = [
    ("create", GROUP, "streamingdeployments", ""),
    ("delete", GROUP, "streamingdeployments", ""),
    ("deletecollection", GROUP, "streamingdeployments", ""),
    ("create", GROUP, "publishedmodels", ""),
    ("delete", GROUP, "publishedmodels", ""),
    *((v, "", "secrets", "") for v in ("create", "update", "patch", "delete")),
    ("delete", "", "events", ""),
    # ConfigMaps: get by name only (least privilege: the periodic check reads the one ConfigMap again).
    *((v, "", "configmaps", "") for v in ("list", "watch", "create", "update", "patch", "delete")),
    ("create", "", "pods", ""),
    ("create", "", "pods", "exec"),
    ("list", "apps", "deployments", ""),
    ("create", "", "serviceaccounts", "token"),
    ("create", "rbac.authorization.k8s.io", "rolebindings", ""),
]
REFUSED_CLUSTER = [
    ("delete", "", "namespaces", ""),
    ("create", "", "namespaces", ""),
    ("get", "", "nodes", ""),
    ("create", "apiextensions.k8s.io", "customresourcedefinitions", ""),
    ("delete", "apiextensions.k8s.io", "customresourcedefinitions", ""),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", ""),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", ""),
    ("impersonate", "", "users", ""),
    ("impersonate", "", "serviceaccounts", ""),
]


def test_the_operator_may_do_what_it_needs_in_every_namespace(k8s_api: k8s.ApiClient,
                                                              operator_identity: Identity) -> None:
    elsewhere = f"team-{uuid.uuid4().hex[:6]}"  # any namespace, even one that does not exist yet
    missing = [(verb, group, resource, sub, ns or "*")
               for verb, group, resource, sub in NEEDED for ns in (elsewhere, "")
               if not allowed(k8s_api, operator_identity, verb, resource, group=group, subresource=sub,
                              namespace=ns)]
    missing += [(verb, group, resource, sub, "cluster") for verb, group, resource, sub in NEEDED_CLUSTER
                if not allowed(k8s_api, operator_identity, verb, resource, group=group, subresource=sub)]
    own = operator_identity.namespace
    missing += [(verb, group, resource, sub, own) for verb, group, resource, sub in NEEDED_OWN
                if not allowed(k8s_api, operator_identity, verb, resource, group=group, subresource=sub,
                               namespace=own)]
    assert missing == []


def test_the_operator_may_do_nothing_else(k8s_api: k8s.ApiClient, operator_identity: Identity) -> None:
    """Nothing else anywhere; in its own namespace, Secrets may be written for the copies of logins, nothing
    more (no patch: a copy is replaced whole)."""
    elsewhere = f"team-{uuid.uuid4().hex[:6]}"
    own = operator_identity.namespace
    granted = [(verb, group, resource, sub, ns or "*")
               for verb, group, resource, sub in REFUSED for ns in (elsewhere, own, "")
               if (ns != own or (verb, group, resource, sub) not in NEEDED_OWN)
               and allowed(k8s_api, operator_identity, verb, resource, group=group, subresource=sub, namespace=ns)]
    granted += [(verb, group, resource, sub, "cluster") for verb, group, resource, sub in REFUSED_CLUSTER
                if allowed(k8s_api, operator_identity, verb, resource, group=group, subresource=sub)]
    assert granted == []


def test_the_grants_reach_the_operators_service_account_only(k8s_api: k8s.ApiClient,
                                                             operator_identity: Identity) -> None:
    """The bindings name the operator's ServiceAccount, not a group: another ServiceAccount of the same
    namespace (same groups) gets none of it. Its refusals also show the reviews above can say no."""
    other = Identity(operator_identity.namespace, "someone-else")
    assert allowed(k8s_api, operator_identity, "list", "secrets")
    for verb, group, resource, sub in [*NEEDED, *NEEDED_CLUSTER]:
        assert not allowed(k8s_api, other, verb, resource, group=group, subresource=sub), (verb, resource, sub)
    for verb, group, resource, sub in NEEDED_OWN:
        assert not allowed(k8s_api, other, verb, resource, group=group, subresource=sub,
                           namespace=operator_identity.namespace), (verb, resource, sub)


# --- Pod Security -----------------------------------------------------------------------------------------

@pytest.fixture
def overlay(tmp_path: Path) -> Path:
    """deploy/ with the wml-server component: every pod template deploy/ ships."""
    return overlay_of_deploy(tmp_path / "overlay", ["wml-server"])


@pytest.fixture
def restricted_like_deploy(kubectl: Kubectl, namespace: str, overlay: Path) -> tuple[str, list[dict[str, Any]]]:
    """The test's namespace with the Pod Security labels of deploy/'s Namespace; the pods of deploy/ to try
    in it (their ServiceAccounts exist there, as the ServiceAccount admission wants)."""
    docs = kustomize_build(kubectl, overlay)
    (ns_doc,) = [d for d in docs if d["kind"] == "Namespace"]
    pss = {k: v for k, v in ns_doc["metadata"].get("labels", {}).items() if k.startswith("pod-security.kubernetes.io/")}
    assert pss, "deploy/'s Namespace sets no Pod Security level"
    kubectl("label", "namespace", namespace, "--overwrite", *(f"{k}={v}" for k, v in pss.items()))
    pods = []
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        template = doc["spec"]["template"]
        account = template["spec"].get("serviceAccountName", "default")
        if kubectl("get", "serviceaccount", account, "-n", namespace, check=False).returncode != 0:
            kubectl("create", "serviceaccount", account, "-n", namespace)
        pods.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": doc["metadata"]["name"], "namespace": namespace,
                                  "labels": template["metadata"].get("labels", {})},
                     "spec": template["spec"]})
    assert {p["metadata"]["name"] for p in pods} == {"wml-stream-operator", "wml-server"}
    return namespace, pods


def dry_run_pod(kubectl: Kubectl, pod: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)


def test_every_pod_of_deploy_is_admitted_under_its_namespaces_pod_security_level(
        kubectl: Kubectl, restricted_like_deploy: tuple[str, list[dict[str, Any]]]) -> None:
    _, pods = restricted_like_deploy
    for pod in pods:
        result = dry_run_pod(kubectl, pod)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"pod/{pod['metadata']['name']} created (server dry run)"
        assert "PodSecurity" not in result.stderr  # not even a warning


@pytest.mark.parametrize("weaken", [
    pytest.param(lambda spec: spec["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
                 id="privilege-escalation"),
    pytest.param(lambda spec: spec["containers"][0]["securityContext"].update(capabilities={"add": ["NET_ADMIN"]}),
                 id="capability"),
    pytest.param(lambda spec: spec["securityContext"].pop("seccompProfile"), id="no-seccomp"),
    pytest.param(lambda spec: (spec["securityContext"].update(runAsNonRoot=False, runAsUser=0),
                               spec["containers"][0]["securityContext"].pop("runAsNonRoot", None)), id="root"),
])
def test_a_weakened_operator_pod_is_refused(kubectl: Kubectl,
                                            restricted_like_deploy: tuple[str, list[dict[str, Any]]],
                                            weaken: Callable[[dict[str, Any]], object]) -> None:
    """The namespace's level is enforced, not merely declared: a patch that weakens the pod is refused."""
    _, pods = restricted_like_deploy
    (pod,) = [p for p in pods if p["metadata"]["name"] == "wml-stream-operator"]
    pod = json.loads(json.dumps(pod))
    weaken(pod["spec"])
    result = dry_run_pod(kubectl, pod)
    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr


def test_every_image_names_a_release(kubectl: Kubectl, overlay: Path) -> None:
    """What `kubectl apply -k` would pull: a fixed version tag of our registry, never `latest` or none."""
    images = [c["image"] for d in kustomize_build(kubectl, overlay) if d["kind"] == "Deployment"
              for c in [*d["spec"]["template"]["spec"].get("initContainers", []),
                        *d["spec"]["template"]["spec"]["containers"]]]
    assert images
    for image in images:
        repository, _, tag = image.rpartition(":")
        assert repository.startswith("ghcr.io/wmlstream/"), image
        assert "/" not in tag, image  # a port, not a tag
        assert tag, image
        assert tag != "latest", image
