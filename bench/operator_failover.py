"""Reconciliation gap when the active one of two operator replicas dies (issue 20, high availability).

    .venv/bin/python bench/operator_failover.py [--rounds 3] [--peering-lifetimes 60,15] [--json PATH]

Its own kube-apiserver and etcd (localplatform's KubeControlPlane; host processes, no node). Two mechanisms, each
with two replicas as host processes running one small kopf operator (an update handler on labelled ConfigMaps
that stamps the value it saw and its pid into annotations):

- **kopf peering** as kopf does it: standalone=False, a KopfPeering object, the active with the higher priority,
  at each --peering-lifetimes value (kopf's default is 60 s; settings.peering.lifetime lowers it);
- **Lease election** as wml_operator.elected runs it (the same code `python -m wml_operator` runs), with
  client-go's durations (15 s lease, 10 s renew deadline, 2 s retry).

Each round: kill -9 of the active replica, at once a change of the ConfigMap, and the time until the standby's
handler stamped it ("gap"); then a fresh standby (lowest priority) is started for the next round. Last, SIGTERM of
the active (a rollout's handover) timed the same way. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "localplatform")]

from _machine import describe, machine  # noqa: E402
from wml_localplatform import process  # noqa: E402
from wml_localplatform.config import PlatformConfig  # noqa: E402
from wml_localplatform.kube import KubeControlPlane  # noqa: E402

NAMESPACE = "wso-failover"
CM = "watched"
PEERING = "failover"
PEERING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "kopfpeerings.kopf.dev"},
    "spec": {"scope": "Namespaced", "group": "kopf.dev",
             "names": {"kind": "KopfPeering", "plural": "kopfpeerings", "singular": "kopfpeering"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]}}


# ----- the replica (this file run with --replica) -----

def replica(mechanism: str, priority: int, lifetime: int, health_port: int) -> None:
    import asyncio

    import kopf

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.peering.lifetime = lifetime
        settings.peering.priority = priority
        settings.posting.enabled = False

    @kopf.on.update("configmaps", labels={"failover": "yes"})
    def stamp(body: Any, patch: kopf.Patch, **_: Any) -> None:
        patch.metadata.setdefault("annotations", {})["failover/seen"] = body["data"]["v"]
        patch.metadata["annotations"]["failover/by"] = str(os.getpid())

    kopf.configure(verbose=False)
    if mechanism == "peering":
        asyncio.run(kopf.operator(standalone=False, peering_name=PEERING, priority=priority,
                                  namespaces=[NAMESPACE], clusterwide=False))
        return
    from wml_operator import elected
    from wml_operator.settings import OperatorSettings
    settings = OperatorSettings(health_address=f"127.0.0.1:{health_port}", pod_namespace=NAMESPACE,
                                leader_election_lease=PEERING)
    asyncio.run(elected.run(settings, lambda: kopf.operator(
        standalone=True, namespaces=[NAMESPACE], clusterwide=False,
        liveness_endpoint=f"http://127.0.0.1:{health_port}/healthz")))


# ----- the driver -----

class Replicas:
    def __init__(self, base: Path, kubeconfig: str, mechanism: str, lifetime: int) -> None:
        self.base, self.kubeconfig, self.mechanism, self.lifetime = base, kubeconfig, mechanism, lifetime
        self.priority = 1000
        self.pids: dict[int, Path] = {}  # pid -> pid file

    def start(self) -> int:
        self.priority -= 1  # each new one below every running one: it stands by
        name = f"{self.mechanism}-{self.lifetime}-{self.priority}"
        log, pid_file = self.base / f"{name}.log", self.base / f"{name}.pid"
        argv = [sys.executable, __file__, "--replica", self.mechanism, str(self.priority), str(self.lifetime),
                str(process.free_port())]
        # The PID file's name must be in the command line (process._is_ours guards kills with it).
        proc = process.start("operator_failover", argv, log, pid_file,
                             env={"KUBECONFIG": self.kubeconfig, "PYTHONPATH": str(ROOT / "operator")})
        self.pids[proc.pid] = pid_file
        return proc.pid

    def wait_log(self, pid: int, text: str, timeout: float = 60) -> None:
        log = self.pids[pid].with_suffix(".log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in log.read_text(errors="replace"):
                time.sleep(2)
                return
            time.sleep(0.1)
        raise RuntimeError(f"{log}: no {text!r} in {timeout} s")

    def stop_all(self) -> None:
        for pid_file in self.pids.values():
            process.kill_pid_file(pid_file)


def change(core: k8s.CoreV1Api, value: str) -> None:
    core.patch_namespaced_config_map(CM, NAMESPACE, {"data": {"v": value}})


def stamped(core: k8s.CoreV1Api, value: str, timeout: float) -> tuple[float, str] | None:
    """(seconds, pid) once a handler stamped `value`; None after timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        notes = core.read_namespaced_config_map(CM, NAMESPACE).metadata.annotations or {}
        if notes.get("failover/seen") == value:
            return time.monotonic() - start, notes["failover/by"]
        time.sleep(0.05)
    return None


def expect(got: tuple[float, str] | None, pid: int, failure: str) -> float:
    """The seconds of a stamp by `pid`; a stamp by another or none fails the run."""
    if got is None or int(got[1]) != pid:
        raise RuntimeError(f"{failure}: {got}")
    return got[0]


def measure(base: Path, kubeconfig: str, core: k8s.CoreV1Api, mechanism: str, lifetime: int,
            rounds: int) -> dict[str, Any]:
    # A kopf peer starts paused (no log line says so): once logged in, it has read the peering object.
    standing_by = "Initial authentication has finished" if mechanism == "peering" else "standing by for the Lease"
    replicas = Replicas(base, kubeconfig, mechanism, lifetime)
    counter = iter(range(1, 10**6))
    gaps: list[float] = []
    try:
        active = replicas.start()
        time.sleep(3)
        value = f"{mechanism}-{lifetime}-{next(counter)}"
        change(core, value)
        first = stamped(core, value, 60)
        expect(first, active, "the first replica did not reconcile")
        standby = replicas.start()
        replicas.wait_log(standby, standing_by)
        for _ in range(rounds):
            time.sleep(3)  # a random-ish point in the renew/keepalive cycle
            process.kill_pid_file(replicas.pids[active])
            value = f"{mechanism}-{lifetime}-{next(counter)}"
            change(core, value)
            got = stamped(core, value, lifetime + 120)
            gaps.append(expect(got, standby, "no takeover"))
            print(f"  {mechanism} lifetime {lifetime}: kill -9 -> reconciled by the standby in {gaps[-1]:.1f} s",
                  flush=True)
            active, standby = standby, replicas.start()
            replicas.wait_log(standby, standing_by)
        time.sleep(3)
        os.kill(active, signal.SIGTERM)
        value = f"{mechanism}-{lifetime}-{next(counter)}"
        change(core, value)
        handover = stamped(core, value, lifetime + 120)
        handover_s = expect(handover, standby, "no handover")
        print(f"  {mechanism} lifetime {lifetime}: SIGTERM -> reconciled by the standby in {handover_s:.1f} s",
              flush=True)
    finally:
        replicas.stop_all()
    return {"mechanism": mechanism, "lifetime_s": lifetime, "kill9_gaps_s": [round(g, 1) for g in gaps],
            "kill9_mean_s": round(statistics.mean(gaps), 1), "kill9_max_s": round(max(gaps), 1),
            "sigterm_handover_s": round(handover_s, 1)}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--replica":
        replica(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peering-lifetimes", default="60,15")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="wso-bench-failover-"))
    plane = KubeControlPlane(PlatformConfig.load(), base / "kube")
    results: list[dict[str, Any]] = []
    try:
        info = plane.start()
        api = k8s_config.new_client_from_config(config_file=info.kubeconfig)
        core = k8s.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        k8s.ApiextensionsV1Api(api).create_custom_resource_definition(PEERING_CRD)
        time.sleep(2)  # the CRD Established (a few hundred ms here)
        k8s.CustomObjectsApi(api).create_namespaced_custom_object(
            "kopf.dev", "v1", NAMESPACE, "kopfpeerings",
            {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}})
        core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": CM, "labels": {"failover": "yes"}},
                                                      "data": {"v": "0"}})
        print(f"machine: {describe(machine())}", flush=True)
        results.append(measure(base, info.kubeconfig, core, "lease", 15, args.rounds))
        for lifetime in (int(x) for x in args.peering_lifetimes.split(",") if x):
            results.append(measure(base, info.kubeconfig, core, "peering", lifetime, args.rounds))
    finally:
        plane.destroy()
    print("\nmechanism  lifetime  kill -9 gaps (s)        mean   max   SIGTERM handover (s)")
    for r in results:
        print(f"{r['mechanism']:<10} {r['lifetime_s']:>6}    {r['kill9_gaps_s']!s:<22} {r['kill9_mean_s']:>5} "
              f"{r['kill9_max_s']:>5}   {r['sigterm_handover_s']}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=2))
    subprocess.run(["rm", "-rf", str(base)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
