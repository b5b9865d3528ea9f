"""The operator and the WML service as pods on the local node: `kubectl apply -k` of deploy/ with
components/wml-server, through an overlay that changes only what this machine needs.

The overlay, and why each change:
- the images built here (hack/build-images.sh), already in the node's containerd;
- a PersistentVolume for the service's claim: no provisioner runs here, so a hostPath volume is bound to it;
- the service's Service on a fixed cluster IP, and that IP for its name in the operator pod's /etc/hosts
  (hostAliases): no cluster DNS runs here to resolve wml-server.wml-stream-operator.svc. The operator's URL,
  HTTPS, and the CA it verifies the service with stay the component's (kube-proxy routes the IP as anywhere).
Everything else (RBAC, ServiceAccount token, probes, security contexts, the rollout strategy, the namespace's restricted
Pod Security) is the manifests' own.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from wml_localplatform.config import PlatformConfig

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "wml-stream-operator"
SERVICE_PORT = 9443
SERVICE_IP = "10.0.0.80"  # in SERVICE_CLUSTER_IP_RANGE (kube.py)
SERVICE_NAME = f"wml-server.{NAMESPACE}.svc"  # what the component's default endpoint names


@dataclass(frozen=True)
class InClusterLogin:
    """The service's first user, which the Secret wml-credentials holds (and the operator's default login)."""

    username: str
    password: str
    instance_id: str


@dataclass(frozen=True)
class Installed:
    login: InClusterLogin
    volume: Path  # the host folder behind the service's data volume
    ca_file: Path  # the CA of the service's certificate
    key_file: Path  # a copy of the service's key (the Secret wml-server-key), for the tests' secret scanner


def install(config: PlatformConfig, kubeconfig: str, base: Path, operator_image: str, server_image: str,
            timeout: int = 180) -> Installed:
    """As deploy/README.md has a user do it: the namespace, its Secrets (the first user, the service's key) and
    the service's certificate (deploy/bootstrap-tls.sh, the bootstrap for clusters without cert-manager), then
    the one `kubectl apply -k`; returns once both Deployments are rolled out."""
    def kubectl(*args: str, input: str | None = None) -> None:
        subprocess.run([str(config.kubectl()), f"--kubeconfig={kubeconfig}", *args], input=input, text=True,
                       capture_output=True, check=True, timeout=timeout)

    login = new_login()
    volume = base / "volumes" / "wml-server-data"
    overlay = write_overlay(base / "overlay", volume, operator_image, server_image)
    made = bootstrap_secrets(login)
    key_file = base / "wml-server.key"
    key_file.write_text(str(made[1]["stringData"]["wml.key"]) + "\n")  # type: ignore[index]
    key_file.chmod(0o600)
    kubectl("create", "namespace", NAMESPACE)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(made))
    tools = base / "tools"  # the script runs `kubectl`: this platform's
    tools.mkdir(exist_ok=True)
    if not (tools / "kubectl").exists():
        (tools / "kubectl").symlink_to(config.kubectl())
    subprocess.run([str(REPO / "deploy" / "bootstrap-tls.sh"), "--san", SERVICE_IP, "--dir", str(base / "tls")],
                   env={**os.environ, "KUBECONFIG": kubeconfig, "PATH": f"{tools}:{os.environ['PATH']}"},
                   check=True, capture_output=True, timeout=timeout)
    kubectl("apply", "-k", str(overlay))
    for deployment in ("wml-server", "wml-stream-operator"):
        kubectl("rollout", "status", f"deployment/{deployment}", "-n", NAMESPACE, f"--timeout={timeout}s")
    return Installed(login, volume, base / "tls" / "ca.crt", key_file)


def write_overlay(folder: Path, volume: Path, operator_image: str, server_image: str) -> Path:
    """The overlay's kustomization folder; `volume`: the host folder behind the service's data volume."""
    folder.mkdir(parents=True, exist_ok=True)
    volume.mkdir(parents=True, exist_ok=True)
    os.chown(volume, 10001, 10001)  # the service's uid: a hostPath volume ignores fsGroup
    volume.chmod(0o700)
    deploy = Path(os.path.relpath(REPO / "deploy", folder))

    def image(name: str, built: str) -> dict[str, str]:
        new_name, new_tag = built.rsplit(":", 1)
        return {"name": name, "newName": new_name, "newTag": new_tag}

    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(deploy), "volume.yaml"],
        "components": [str(deploy / "components" / "wml-server")],
        "images": [image("ghcr.io/wmlstream/wml-stream-operator", operator_image),
                   image("ghcr.io/wmlstream/wml-server", server_image)],
        "patches": [{"path": "service-ip.yaml"}, {"path": "operator-hosts.yaml"}],
    }, sort_keys=False))
    (folder / "volume.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "wso-wml-server-data"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "claimRef": {"namespace": NAMESPACE, "name": "wml-server-data"},
                 "hostPath": {"path": str(volume), "type": "Directory"}},
    }, sort_keys=False))
    (folder / "service-ip.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "wml-server", "namespace": NAMESPACE},
        "spec": {"clusterIP": SERVICE_IP},
    }, sort_keys=False))
    (folder / "operator-hosts.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "wml-stream-operator", "namespace": NAMESPACE},
        "spec": {"template": {"spec": {"hostAliases": [{"ip": SERVICE_IP, "hostnames": [SERVICE_NAME]}]}}},
    }, sort_keys=False))
    return folder


def new_login() -> InClusterLogin:
    return InClusterLogin(f"admin-{secrets.token_hex(3)}", secrets.token_urlsafe(18), str(uuid.uuid4()))


def bootstrap_secrets(login: InClusterLogin) -> list[dict[str, object]]:
    """The Secrets deploy/README.md has a user create before the first apply: the service's first user and
    the key that encrypts what the service stores."""
    key = secrets.token_urlsafe(32)  # 32 random bytes, urlsafe base64: a Fernet key
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wml-credentials", "namespace": NAMESPACE},
         "stringData": {"username": login.username, "password": login.password, "instance_id": login.instance_id}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wml-server-key", "namespace": NAMESPACE},
         "stringData": {"wml.key": key + "=" * (-len(key) % 4)}},
    ]
