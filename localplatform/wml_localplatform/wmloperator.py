"""The operator as a local process under deploy/'s RBAC, for the e2e tests and the demo.

No nodes run pods here, so the operator runs as `kopf run` does in development: a process on this machine.
It still acts as its ServiceAccount: the kubeconfig it gets holds a token of `wml-stream-operator`, which
has exactly the ClusterRoles of deploy/rbac.yaml.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from wml_localplatform import process
from wml_localplatform.config import ROOT
from wml_localplatform.kube import kubeconfig_yaml

CRD = ROOT / "crds" / "wmlstream.dev_streamingdeployments.yaml"
CRDS = (CRD, ROOT / "crds" / "wmlstream.dev_publishedmodels.yaml")
CRD_NAMES = ("streamingdeployments.wmlstream.dev", "publishedmodels.wmlstream.dev")
DEPLOY = ROOT / "deploy"
OPERATOR_NAMESPACE = SERVICE_ACCOUNT = "wml-stream-operator"
# Runs kubectl with the admin's kubeconfig: (*args, input=None, check=True) -> CompletedProcess; fails when check.
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def kubectl_runner(binary: Path, kubeconfig: str | Path, error: type[Exception] = RuntimeError) -> Kubectl:
    """A Kubectl: runs `binary` with that kubeconfig; a non-zero exit raises `error` with kubectl's stderr."""
    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(binary), f"--kubeconfig={kubeconfig}", *args], input=input,
                                capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            raise error(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    return run


def install_crd(kubectl: Kubectl) -> None:
    """Both CRDs (StreamingDeployment, PublishedModel): the operator watches both kinds."""
    for crd in CRDS:
        kubectl("apply", "-f", str(crd))
    # Right after the apply, a CRD may have no conditions yet, and `kubectl wait` then fails at once
    # (".status.conditions accessor error: <nil>") instead of waiting: ask again until it waits for real.
    deadline = time.monotonic() + 60
    for name in CRD_NAMES:
        while True:
            result = kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}", check=False)
            if result.returncode == 0:
                break
            if "accessor error" not in result.stderr or time.monotonic() > deadline:
                raise RuntimeError(f"the CRD {name} is not Established: {result.stderr.strip()}")
            time.sleep(0.2)


def install_rbac(kubectl: Kubectl) -> None:
    """The operator's namespace, ServiceAccount and ClusterRoles from deploy/ (not its Deployment: no nodes)."""
    for part in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml"):
        kubectl("apply", "-f", str(DEPLOY / part))


def service_account_kubeconfig(kubectl: Kubectl, admin_kubeconfig: Path, dest: Path, duration: str = "3h",
                               namespace: str = OPERATOR_NAMESPACE, name: str = SERVICE_ACCOUNT) -> Path:
    """Writes a kubeconfig holding a token of a ServiceAccount (default: the operator's; 0600)."""
    token = kubectl("create", "token", name, "-n", namespace, f"--duration={duration}").stdout.strip()
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(kubeconfig_yaml(cluster["server"], base64.b64decode(cluster["certificate-authority-data"]),
                                    name, token=token))
    dest.chmod(0o600)
    return dest


class WMLOperator:
    """`python -m wml_operator` started in its own session, with a PID file in `directory`."""

    def __init__(self, directory: Path, kubeconfig: Path, env: Mapping[str, str] | None = None) -> None:
        self.dir = directory
        self.kubeconfig = kubeconfig
        self.env = dict(env or {})
        self.log = directory / "operator.log"
        self.pid_file = directory / "operator.pid"
        self.health_port = process.free_port()
        self.metrics_port = process.free_port()

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return process.is_running(self.pid_file)

    def start(self, timeout: float = 60.0) -> float:
        """Starts it and waits for its liveness endpoint; returns the seconds that took."""
        self.dir.mkdir(parents=True, exist_ok=True)
        env = {"KUBECONFIG": str(self.kubeconfig),
               "WML_OPERATOR_HEALTH_ADDRESS": f"127.0.0.1:{self.health_port}",
               "WML_OPERATOR_METRICS_ADDRESS": f"127.0.0.1:{self.metrics_port}",
               "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("operator", "server")),
               # Leader election off unless a caller turns it on (tests/integration/test_operator_ha.py): many
               # tests run operators side by side against one apiserver, each for its own namespaces, and
               # restart them with kill -9 (a shared Lease would block each behind the other, and every restart
               # after a kill by its duration); the fault suite stops the apiserver for longer than the renew
               # deadline, after which an elected operator exits by design, and no kubelet restarts it here.
               "WML_OPERATOR_LEADER_ELECTION": "false",
               **self.env}
        proc = process.start("wml_operator", [sys.executable, "-m", "wml_operator"], self.log, self.pid_file,
                             env=env)
        return process.wait_ready("operator", lambda: process.port_open(self.health_port), proc, self.log, timeout)

    def stop(self) -> None:
        process.stop_pid_file(self.pid_file, timeout=20.0)

    def stacks(self, wait: float = 1.0) -> str:
        """Every thread's stack (the operator prints them on SIGUSR1), for a test that failed waiting on it."""
        before = len(self.text())
        if not process.signal_pid_file(self.pid_file, signal.SIGUSR1):
            return "(the operator is not running)"
        time.sleep(wait)
        return self.text()[before:]

    def kill(self) -> None:
        """kill -9: no handler finishes, no status is written, as in a crash or an OOM kill."""
        process.kill_pid_file(self.pid_file)
