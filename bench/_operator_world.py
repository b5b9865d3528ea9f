"""The pieces bench/operator_scale.py and bench/operator_churn.py measure with: a local control plane, an
accept-only WML service behind a recording proxy, the operator as a process, a watch on the StreamingDeployments
(bench/_sdep_watch.py), and the counters they read.

Everything runs on 127.0.0.1 in a temporary folder and is stopped, by PID, at the end (World is a context
manager). Nothing here asserts on time.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from prometheus_client.parser import text_string_to_metric_families

from _machine import cpu_seconds
from _sdep_watch import GROUP, PLURAL, VERSION, Snapshot, Watcher
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_localplatform.config import PlatformConfig, read_versions
from wml_localplatform.faultproxy import FaultProxy, Seen
from wml_localplatform.kube import KubeControlPlane, KubeInfo
from wml_localplatform.wmloperator import (
    WMLOperator,
    install_crd,
    install_rbac,
    kubectl_runner,
    service_account_kubeconfig,
)
from wml_localplatform.wmlservice import WMLService, WMLUser

MODEL = "3b1f3d7e-5c1a-4d8e-9b7a-6f0e2c9d4a11"  # the service's "Sentiment Prediction"
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})
WML_WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})
APPLY_THREADS = 16  # how many creates or patches the benchmark keeps in flight, for the operator and the limit
_REQUEST_TOTAL = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.MULTILINE)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def settled(s: Snapshot) -> bool:
    """Ready for its current generation, and not deleted."""
    return s.settled and not s.deleted


def gone(s: Snapshot) -> bool:
    return s.deleted


# -- processes --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcStats:
    rss_mb: float  # VmRSS
    hwm_mb: float  # VmHWM: the peak RSS so far
    cpu_s: float  # user + system seconds since the process started


def proc_stats(pid: int) -> ProcStats:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return ProcStats(rss_mb=int(fields["VmRSS"].split()[0]) / 1024, hwm_mb=int(fields["VmHWM"].split()[0]) / 1024,
                     cpu_s=cpu_seconds(pid))


def pid_of(pid_file: Path) -> int:
    return int(pid_file.read_text().split()[0])


def etcd_version(config: PlatformConfig) -> str:
    try:
        out = subprocess.run([str(config.etcd()), "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    found = re.search(r"etcd Version: (\S+)", out)
    return found.group(1) if found else "unknown"


# -- the WML side ------------------------------------------------------------------------------------------------
class TimedProxy(FaultProxy):
    """A FaultProxy (no faults set) that also notes when each answer was sent: `answered[i]` belongs to
    `seen[i]`. Arrival to answer of a create is the WML transition of an accept-only service."""

    def __init__(self, upstream: str, log: Path) -> None:
        super().__init__(upstream, log)
        self.answered: list[float] = []

    def _record(self, seen: Seen, body: bytes) -> None:
        done = time.monotonic()
        with self._lock:
            self.answered.append(done)
            self.seen.append(seen)
        # The response log is the secret scanner's in the tests; here it would only grow (1,000-item lists).

    def timed(self, since: float = 0.0) -> list[tuple[Seen, float]]:
        with self._lock:
            pairs = list(zip(self.seen, self.answered, strict=True))
        return [(s, done) for s, done in pairs if s.at >= since]


def wml_kind(seen: Seen) -> str:
    """What a WML request was, for counting: list, get, create, set-state, delete, token, other."""
    path = seen.path.split("?", 1)[0].rstrip("/")
    if "/identity/token" in path:
        return "token"
    if path.endswith("/deployments"):
        return {"GET": "list", "POST": "create"}.get(seen.method, "other")
    if "/deployments/" in path:
        return {"GET": "get", "PATCH": "set-state", "DELETE": "delete"}.get(seen.method, "other")
    return "other"


def wml_counts(seen: Iterable[Seen]) -> dict[str, int]:
    return dict(sorted(Counter(wml_kind(s) for s in seen).items()))


# -- the apiserver -----------------------------------------------------------------------------------------------
def apiserver_writes(api: k8s.ApiClient) -> Counter[str]:
    """apiserver_request_total of the write verbs, by "VERB resource[/subresource]" (every client's writes)."""
    resp = api.call_api(*api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"]))
    text = resp.read().decode()
    out: Counter[str] = Counter()
    for match in _REQUEST_TOTAL.finditer(text):
        labels = dict(_LABEL.findall(match.group("labels")))
        if labels.get("verb") not in WRITE_VERBS:
            continue
        what = labels.get("resource", "?") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        out[f"{labels['verb']} {what}"] += int(float(match.group("value")))
    return out


def delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] - before.get(k, 0)}


def ours(writes: dict[str, int]) -> int:
    """Writes to StreamingDeployments and Events: what the operator (and the benchmark) writes."""
    return sum(n for key, n in writes.items() if key.split()[1].split("/")[0] in (PLURAL, "events"))


def operator_metrics(url: str) -> dict[str, float]:
    """The operator's Prometheus samples, summed by name and the labels that matter here."""
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our own operator on 127.0.0.1
        text = resp.read().decode()
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] += sample.value
            if "trigger" in sample.labels:  # wml_operator_reconciles_total{trigger=resume}
                out[f"{sample.name}{{trigger={sample.labels['trigger']}}}"] += sample.value
    return dict(out)


# -- the world ----------------------------------------------------------------------------------------------------
def manifest(namespace: str, name: str, state: str = "RUNNING") -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "StreamingDeployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"state": state, "modelId": MODEL, "wml": {"credentialsSecretRef": {"name": "wml"}},
                     "sparkCredentialsSecretRef": {"name": "spark", "key": "credentials.json"},
                     "input": {"topic": "tweets", "connectionSecretRef": {"name": "kafka"}},
                     "output": {"topic": "tweet-sentiment", "connectionSecretRef": {"name": "kafka"}}}}


class World:
    """Control plane, WML service (accept-only), its recording proxy, and the operator watching `namespace`."""

    def __init__(self, operator_env: dict[str, str] | None = None, keep: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wso-bench-operator-"))
        self.keep = keep
        self.config = PlatformConfig.load()
        self.plane = KubeControlPlane(self.config, self.dir / "kube")
        self.namespace = "wso-bench"
        self.raw_namespace = "wso-bench-raw"  # not watched by the operator: the apiserver alone
        self.operator_env = operator_env or {}
        self.service = WMLService(self.dir / "wml", env={"WML_SERVER_RUN_STREAMS": "false",
                                                         "WML_SERVER_DEPLOYMENT_LIMIT": "100000",
                                                         "WML_SERVER_LOG_LEVEL": "warning"})
        self.proxy = TimedProxy(self.service.url, self.dir / "proxy.log")
        self.kube: KubeInfo | None = None
        self.operator: WMLOperator | None = None
        self.user: WMLUser | None = None
        self.api: k8s.ApiClient | None = None
        self.watcher: Watcher | None = None
        self.pool = ThreadPoolExecutor(APPLY_THREADS)
        self.timings: dict[str, float] = {}

    # lifecycle
    def __enter__(self) -> World:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _start(self) -> None:
        started = time.monotonic()
        self.kube = self.plane.start()
        kubectl = kubectl_runner(self.config.kubectl(), self.kube.kubeconfig)
        cfg = k8s.Configuration()
        k8s_config.load_kube_config(config_file=self.kube.kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = APPLY_THREADS + 8
        self.api = k8s.ApiClient(cfg)
        install_crd(kubectl)
        install_rbac(kubectl)
        sa_kubeconfig = service_account_kubeconfig(kubectl, Path(self.kube.kubeconfig),
                                                   self.dir / "operator.kubeconfig", duration="6h")
        self.timings["platform_s"] = time.monotonic() - started
        self.service.start()
        self.proxy.start()
        self.user = self.service.add_user("bench")
        core = k8s.CoreV1Api(self.api)
        for ns in (self.namespace, self.raw_namespace):
            core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
        self._secrets(self.namespace)
        self.watcher = Watcher(self.api, self.namespace).start()
        self.operator = WMLOperator(self.dir / "operator", sa_kubeconfig,
                                    env={"WML_OPERATOR_NAMESPACES": self.namespace, **self.operator_env})
        self.timings["operator_start_s"] = self.operator.start()

    def _secrets(self, namespace: str) -> None:
        """The Secrets of the manifest: wml (through the proxy), kafka (a broker nobody reaches: accept-only), spark."""
        assert self.user is not None
        data = {
            "wml": {"url": self.proxy.url, "instance_id": self.user.instance_id, "username": self.user.username,
                    "password": self.user.password},
            "kafka": {"kafka_brokers_sasl": "127.0.0.1:9", "user": "u", "password": "p"},
            "spark": {"credentials.json": json.dumps({
                "tenant_id": "t1", "tenant_id_full": "t1-full", "cluster_master_url": "https://spark.invalid",
                "instance_id": str(uuid.uuid4()), "tenant_secret": "spark-" + uuid.uuid4().hex,
                "plan": "standard"})},
        }
        core = k8s.CoreV1Api(self.api)
        for name, values in data.items():
            core.create_namespaced_secret(namespace, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name),
                                                                  string_data=values))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.watcher is not None:
            self.watcher.stop()
        if self.operator is not None:
            self.operator.stop()
        self.proxy.stop()
        self.service.stop()
        self.plane.stop()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # what the benchmark does to resources
    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    def create(self, namespace: str, names: list[str], state: str = "RUNNING") -> float:
        """Creates the resources, APPLY_THREADS at a time; returns the seconds until the last create answered."""
        started = time.monotonic()
        list(self.pool.map(lambda n: self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, manifest(namespace, n, state)), names))
        return time.monotonic() - started

    def replay(self, namespace: str, names: list[str], writes: int) -> float:
        """`writes` raw writes as the operator's are made: the resources created, then status patches spread over
        them (each one a change, so etcd really writes); returns the seconds for all of them."""
        started = time.monotonic()
        self.create(namespace, names)
        list(self.pool.map(lambda i: self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, names[i % len(names)], {"status": {"message": f"write {i}"}}),
            range(max(0, writes - len(names)))))
        return time.monotonic() - started

    def set_state(self, namespace: str, names: list[str], state: str) -> float:
        started = time.monotonic()
        list(self.pool.map(lambda n: self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, n, {"spec": {"state": state}}), names))
        return time.monotonic() - started

    def delete(self, namespace: str, names: list[str]) -> float:
        """Deletes the resources, APPLY_THREADS at a time (the operator's finalizer then deletes their WML
        deployments); returns the seconds until the last delete answered, not until they are gone."""
        started = time.monotonic()
        list(self.pool.map(lambda n: self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, n), names))
        return time.monotonic() - started

    def delete_all(self, namespace: str, timeout: float = 600.0) -> float:
        """Deletes every StreamingDeployment of the namespace and waits until none is left (the operator's
        finalizer deletes their WML deployments first); returns the seconds it took."""
        started = time.monotonic()
        self.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        while time.monotonic() - started < timeout:
            if not self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, limit=1)["items"]:
                return time.monotonic() - started
            time.sleep(0.25)
        raise RuntimeError(f"resources of {namespace} still there after {timeout:.0f} s")

    # what the benchmark reads
    def operator_stats(self) -> ProcStats:
        assert self.operator is not None
        return proc_stats(pid_of(self.operator.pid_file))

    def service_stats(self) -> ProcStats:
        return proc_stats(pid_of(self.service.pid_file))

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the operator, the WML service, kube-apiserver, etcd and this benchmark (its
        watch, its proxy in front of WML, its creates and patches)."""
        assert self.operator is not None
        pids = {"operator": self.operator.pid_file, "wml service": self.service.pid_file,
                "kube-apiserver": self.plane.dir / "kube-apiserver.pid", "etcd": self.plane.dir / "etcd.pid"}
        return {**{name: proc_stats(pid_of(path)).cpu_s for name, path in pids.items()},
                "benchmark": time.process_time()}

    def writes(self) -> Counter[str]:
        assert self.api is not None
        return apiserver_writes(self.api)

    def op_metrics(self) -> dict[str, float]:
        assert self.operator is not None
        return operator_metrics(self.operator.metrics_url)

    def kube_version(self) -> str:
        assert self.api is not None
        return str(k8s.VersionApi(self.api).get_code().git_version)

    def versions(self) -> dict[str, str]:
        pinned = read_versions()
        return {"kubernetes": self.kube_version(), "etcd": etcd_version(self.config),
                "kafka": f"{pinned['KAFKA_VERSION']} (not used here: accept-only)",
                "python": platform.python_version(), "kopf": metadata.version("kopf"),
                "kubernetes_client": metadata.version("kubernetes")}

    def wml_client(self) -> WMLClient:
        """A client of the benchmark's own, to the same instance through the same proxy."""
        assert self.user is not None
        return WMLClient(self.proxy.url, WMLCredentials(self.user.username, self.user.password),
                         self.user.instance_id)

    def resources(self, namespace: str) -> int:
        """How many StreamingDeployments the namespace holds (read from the apiserver, not the watch)."""
        return len(self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"])


@dataclass
class Counters:
    """Everything counted at one moment, to subtract from a later one."""

    at: float
    wml_index: int
    writes: Counter[str]
    metrics: dict[str, float]
    cpu: dict[str, float]  # CPU seconds of each process so far

    @classmethod
    def take(cls, world: World) -> Counters:
        return cls(time.monotonic(), len(world.proxy.seen), world.writes(), world.op_metrics(), world.cpu())

    def since(self, world: World) -> dict[str, Any]:
        """What happened from this moment until now: WML requests, apiserver writes, operator work."""
        now = Counters.take(world)
        seen = world.proxy.seen[self.wml_index:now.wml_index]
        writes = delta(now.writes, self.writes)
        cpu = {name: now.cpu[name] - self.cpu.get(name, 0.0) for name in now.cpu}
        return {
            "seconds": now.at - self.at,
            "wml_requests": len(seen),
            "wml_by_kind": wml_counts(seen),
            "wml_writes": sum(1 for s in seen if s.method in WML_WRITES),
            "apiserver_writes": writes,
            "apiserver_writes_ours": ours(writes),
            "operator_status_writes": now.metrics.get("wml_operator_status_writes_total", 0.0)
            - self.metrics.get("wml_operator_status_writes_total", 0.0),
            "cpu_s": cpu,
            "operator_cpu_s": cpu["operator"],
            "service_cpu_s": cpu["wml service"],
            "operator_rss_mb": world.operator_stats().rss_mb,
        }
