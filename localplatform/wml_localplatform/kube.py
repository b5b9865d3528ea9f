"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver and kube-controller-manager.

No nodes and no kubelet: operators run as local processes. The controller manager runs only the
controllers that give namespaces and ownerReferences their real meaning (namespace deletion and garbage
collection) and the ServiceAccount controller, so a deleted test namespace really goes away.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from wml_localplatform import process
from wml_localplatform.certs import CertificateAuthority, service_account_keys
from wml_localplatform.config import PlatformConfig

CONTROLLERS = "namespace-controller,garbage-collector-controller,serviceaccount-controller"
# With a node (node.py): what a Deployment with a PersistentVolumeClaim and a ServiceAccount token needs.
NODE_CONTROLLERS = ("deployment-controller,replicaset-controller,root-ca-certificate-publisher-controller,"
                    "persistentvolume-binder-controller,node-lifecycle-controller,endpointslice-controller")
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"  # nothing routes to it but what node.py adds for 10.0.0.1
KUBERNETES_SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service: what pods' KUBERNETES_SERVICE_HOST names


@dataclass(frozen=True)
class KubeInfo:
    kubeconfig: str
    server: str
    version: str
    ready_seconds: float  # from launching etcd to the apiserver's /readyz answering 200
    apiserver_ready_seconds: float  # from launching kube-apiserver alone

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def kubeconfig_yaml(server: str, ca_pem: bytes, user: str, *, cert_pem: bytes | None = None,
                    key_pem: bytes | None = None, token: str | None = None) -> str:
    """A kubeconfig with everything embedded, so it can be copied anywhere."""
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    creds: dict[str, str] = {}
    if cert_pem and key_pem:
        creds = {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}
    if token:
        creds["token"] = token
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "wso-local", "cluster": {"server": server,
                                                       "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": f"{user}@wso-local", "context": {"cluster": "wso-local", "user": user}}],
        "current-context": f"{user}@wso-local",
    }, sort_keys=False)


class KubeControlPlane:
    """`for_nodes`: also the controllers a node's workloads need (node.py)."""

    def __init__(self, config: PlatformConfig, directory: Path, *, for_nodes: bool = False) -> None:
        self.config = config
        self.dir = directory
        self.for_nodes = for_nodes
        self.pki = directory / "pki"
        self.logs = directory / "logs"
        self.info_path = directory / "info.json"
        # name -> (argv, log, readiness probe): what restart() relaunches, identical to the first start
        self._launched: dict[str, tuple[list[str | os.PathLike[str]], Path, Callable[[], bool]]] = {}

    def _pid(self, name: str) -> Path:
        return self.dir / f"{name}.pid"

    def running(self) -> bool:
        return all(process.is_running(self._pid(n)) for n in ("etcd", "kube-apiserver"))

    def info(self) -> KubeInfo:
        return KubeInfo(**json.loads(self.info_path.read_text()))

    def start(self, timeout: float = 90.0) -> KubeInfo:
        if self.running() and self.info_path.is_file():
            return self.info()
        self.stop()  # whatever half of a previous start is left
        apiserver_bin = self.config.k8s_binary("kube-apiserver")
        kcm_bin = self.config.k8s_binary("kube-controller-manager")
        etcd_bin = self.config.etcd()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        ca = CertificateAuthority(self.pki)
        etcd_server = ca.issue("etcd-server", "etcd", server=True)
        etcd_client = ca.issue("etcd-client", "kube-apiserver-etcd-client", client=True)
        serving = ca.issue("apiserver", "kube-apiserver", server=True, ips=(KUBERNETES_SERVICE_IP,))
        kubelet_client = ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                                  organization="system:masters", client=True)
        admin = ca.issue("admin", "wso-admin", organization="system:masters", client=True)
        sa = service_account_keys(self.pki)

        started = time.monotonic()
        etcd_port, etcd_peer, api_port, kcm_port = (process.free_port() for _ in range(4))
        etcd_url = f"https://127.0.0.1:{etcd_port}"
        etcd_log = self.logs / "etcd.log"
        etcd_argv: list[str | os.PathLike[str]] = [
            etcd_bin, "--name", "wso", "--data-dir", self.dir / "etcd-data",
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"wso=http://127.0.0.1:{etcd_peer}",
            "--cert-file", etcd_server.cert, "--key-file", etcd_server.key,
            "--client-cert-auth", "--trusted-ca-file", ca.cert_path,
            "--listen-metrics-urls", f"http://127.0.0.1:{process.free_port()}",
        ]
        self._launched["etcd"] = (etcd_argv, etcd_log, lambda: process.port_open(etcd_port))
        etcd = process.start("etcd", etcd_argv, etcd_log, self._pid("etcd"))
        process.wait_ready("etcd", lambda: process.port_open(etcd_port), etcd, etcd_log, timeout)

        server = f"https://127.0.0.1:{api_port}"
        api_log = self.logs / "kube-apiserver.log"
        api_argv: list[str | os.PathLike[str]] = [
            apiserver_bin,
            f"--etcd-servers={etcd_url}", f"--etcd-cafile={ca.cert_path}",
            f"--etcd-certfile={etcd_client.cert}", f"--etcd-keyfile={etcd_client.key}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={ca.cert_path}", f"--cert-dir={self.pki}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={sa.cert}", f"--service-account-signing-key-file={sa.key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=RBAC", "--endpoint-reconciler-type=none", "--profiling=false",
            # kubectl logs/exec on a node's pods (node.py): the kubelet is reached at its node's address.
            f"--kubelet-client-certificate={kubelet_client.cert}", f"--kubelet-client-key={kubelet_client.key}",
            "--kubelet-preferred-address-types=InternalIP",
        ]
        ctx = ssl.create_default_context(cafile=str(ca.cert_path))
        ctx.load_cert_chain(str(admin.cert), str(admin.key))
        self._launched["kube-apiserver"] = (api_argv, api_log, lambda: _readyz(server, ctx))
        apiserver = process.start("kube-apiserver", api_argv, api_log, self._pid("kube-apiserver"))
        api_ready = process.wait_ready("kube-apiserver", lambda: _readyz(server, ctx), apiserver, api_log,
                                       timeout)

        kubeconfig = self.dir / "admin.kubeconfig"
        kubeconfig.write_text(kubeconfig_yaml(server, ca.cert_pem, "wso-admin",
                                              cert_pem=admin.cert.read_bytes(), key_pem=admin.key.read_bytes()))
        kubeconfig.chmod(0o600)
        kcm_log = self.logs / "kube-controller-manager.log"
        process.start("kube-controller-manager", [
            kcm_bin, f"--kubeconfig={kubeconfig}",
            f"--controllers={CONTROLLERS},{NODE_CONTROLLERS}" if self.for_nodes else f"--controllers={CONTROLLERS}",
            f"--root-ca-file={ca.cert_path}",
            "--leader-elect=false", "--use-service-account-credentials=false",
            "--bind-address=127.0.0.1", f"--secure-port={kcm_port}", f"--cert-dir={self.pki / 'kcm'}",
        ], kcm_log, self._pid("kube-controller-manager"))

        info = KubeInfo(kubeconfig=str(kubeconfig), server=server, version=self.config.k8s_version,
                        ready_seconds=round(time.monotonic() - started, 2),
                        apiserver_ready_seconds=round(api_ready, 2))
        self.info_path.write_text(info.to_json())
        return info

    def restart(self, name: str, down_seconds: float = 0.0, kill: bool = False, timeout: float = 90.0) -> float:
        """Stops etcd or kube-apiserver (SIGTERM, or SIGKILL when kill), leaves it down for down_seconds and
        starts it again with the same flags, ports and data; returns seconds from relaunch to ready. Only for
        a control plane this object started."""
        if name not in self._launched:
            raise ValueError(f"cannot restart {name!r}: not started by this object ({sorted(self._launched)})")
        argv, log, ready = self._launched[name]
        if kill:
            process.kill_pid_file(self._pid(name))
        else:
            process.stop_pid_file(self._pid(name))
        time.sleep(down_seconds)
        proc = process.start(name, argv, log, self._pid(name))
        return process.wait_ready(name, ready, proc, log, timeout)

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            process.stop_pid_file(self._pid(name))

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _readyz(server: str, ctx: ssl.SSLContext) -> bool:
    with urllib.request.urlopen(f"{server}/readyz", context=ctx, timeout=2) as resp:  # noqa: S310
        return bool(resp.status == 200)
