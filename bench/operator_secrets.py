"""The operator beside many Secrets it does not use (issue 15): memory, churn CPU, rotation latency.

    .venv/bin/python bench/operator_secrets.py [--secrets 10000] [--resources 1000] [--json PATH]
    .venv/bin/python bench/operator_secrets.py --operator-tree /work/wt-before   # another tree's operator code

Runs in the world of bench/operator_scale.py (its own kube-apiserver and etcd, the accept-only WML service behind
the recording proxy, the operator as a process under deploy/'s RBAC), with the operator watching every namespace
as deploy/operator.yaml configures it (WML_OPERATOR_NAMESPACES empty). The unrelated Secrets look like Helm
release Secrets: 48 KB of data each (incompressible, as Helm's gzipped releases are), 90 % in a namespace no
resource references, 10 % beside the resources. Phases, in this order, each memory figure from a fresh start of
the operator (SIGTERM, start: what a user does after an upgrade, and when the start-up peak matters most):

1. 0 Secrets, 0 resources: RSS peak (VmHWM once start-up settled) and steady (VmRSS after --steady-seconds);
2. --secrets created (16 in flight), the operator restarted: the same;
3. --resources applied (one of them with a Kafka Secret of its own), all Ready, the operator restarted: the same;
   then --churn updates of unrelated Secrets (new data each), timed until the operator's Secret-event counter
   rose by as many (old code without the counter: until its CPU is quiet), its CPU over that window minus the CPU
   of an idle window of the same length right after; reads, reconciles and WML requests it caused are counted;
   then --rotations rotations of the one resource's Kafka Secret, each timed until the re-create arrives at WML
   and until status.deploymentId changes;
4. the unrelated Secrets deleted, the operator restarted: the same as 1 with the resources.

"Settled" is: the operator's liveness answered, its Secret list is through (events >= Secrets in the cluster),
every resource resumed, and then its CPU below 5 % for 3 s. RSS figures are MiB from /proc (as the pod limit
counts them). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

from kubernetes import client as k8s

from _machine import describe, machine
from _operator_world import World, log, manifest, pid_of, proc_stats, settled, wml_counts, wml_kind
from _sdep_watch import GROUP, PLURAL, VERSION

SECRET_BYTES = 48 * 1024  # one Helm release Secret of the user's report
UNRELATED_NS = "wso-bench-helm"  # nothing there references it
WATCHED_SHARE = 0.1  # of the Secrets beside the resources: the watch covers that namespace as much as any
ROTATED = "rot-0"  # the resource whose Kafka Secret is rotated; the others share "kafka"
ROTATED_SECRET = "kafka-rot"  # noqa: S105 - a Secret's name
TARGETS = {"rss_over_without_mb": 20.0, "rotation_s": 5.0, "churn_cpu_s": 1.0}
QUIET_CPU = 0.05  # share of one core below which the operator counts as idle
QUIET_FOR = 3.0
TRAILING = 2.0  # seconds after the churn's last event still counted as the churn's


def loadavg() -> float:
    return os.getloadavg()[0]


# -- Secrets -------------------------------------------------------------------------------------------------------
def blob() -> str:
    """48 KB of random bytes, base64 as a Secret's data carries them; a new one per call so etcd stores each."""
    return base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def secret_names(n: int) -> list[tuple[str, str]]:
    """(namespace, name) of the n unrelated Secrets, named like Helm's."""
    beside = int(n * WATCHED_SHARE)
    return [("wso-bench" if i < beside else UNRELATED_NS, f"sh.helm.release.v1.app-{i:05d}.v1") for i in range(n)]


def create_secrets(world: World, names: list[tuple[str, str]]) -> float:
    core = k8s.CoreV1Api(world.api)

    def one(item: tuple[str, str]) -> None:
        namespace, name = item
        # A dict body, not V1Secret: the client's model serialization would cost this process (and so the
        # shared cores) more than the request itself.
        core.create_namespaced_secret(namespace, {  # type: ignore[arg-type]
            "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
            "metadata": {"name": name, "labels": {"owner": "helm", "name": name.split(".")[3]}},
            "data": {"release": blob()}})

    started = time.monotonic()
    list(world.pool.map(one, names))
    return time.monotonic() - started


def update_secrets(world: World, names: list[tuple[str, str]]) -> float:
    core = k8s.CoreV1Api(world.api)
    started = time.monotonic()
    list(world.pool.map(lambda item: core.patch_namespaced_secret(item[1], item[0], {"data": {"release": blob()}}),
                        names))
    return time.monotonic() - started


def delete_secrets(world: World, names: list[tuple[str, str]]) -> float:
    core = k8s.CoreV1Api(world.api)
    started = time.monotonic()
    # One by one, 16 in flight: one deletecollection of thousands can outlive the apiserver's 60 s timeout.
    list(world.pool.map(lambda item: core.delete_namespaced_secret(item[1], item[0]), names))
    return time.monotonic() - started


def secrets_in_cluster(world: World) -> int:
    core = k8s.CoreV1Api(world.api)
    total, cont = 0, None
    while True:
        page = core.list_secret_for_all_namespaces(limit=500, _continue=cont, _preload_content=False,
                                                   _headers={"Accept": "application/json;as=PartialObjectMetadataList;"
                                                                       "g=meta.k8s.io;v=v1"})
        body = json.loads(cast(Any, page).data)  # unparsed: the client's annotation names the model
        total += len(body.get("items") or ())
        cont = (body.get("metadata") or {}).get("continue")
        if not cont:
            return total


# -- the operator --------------------------------------------------------------------------------------------------
def metric(world: World, name: str) -> float | None:
    """One of the operator's counters, None when this operator has no such metric (the code before issue 15)."""
    try:
        return world.op_metrics().get(name)
    except OSError:
        return None


def wait_quiet(world: World, timeout: float, until: Any = None) -> float:
    """Until `until()` holds (if given) and then the operator's CPU stays below QUIET_CPU for QUIET_FOR seconds;
    returns the seconds it took."""
    started = time.monotonic()
    while until is not None and not until():
        if time.monotonic() - started > timeout:
            log(f"  not settled after {timeout:.0f} s; measuring anyway")
            return time.monotonic() - started
        time.sleep(0.2)
    cpu, at, quiet_since = world.operator_stats().cpu_s, time.monotonic(), time.monotonic()
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        now_cpu, now = world.operator_stats().cpu_s, time.monotonic()
        if (now_cpu - cpu) / (now - at) > QUIET_CPU:
            quiet_since = now
        elif now - quiet_since >= QUIET_FOR:
            break
        cpu, at = now_cpu, now
    return time.monotonic() - started


def memory(world: World, resources: int, secrets_total: int, steady_seconds: float, timeout: float) -> dict[str, Any]:
    """Restarts the operator and reads its start-up peak once settled and its RSS after steady_seconds."""
    assert world.operator is not None
    stop_started = time.monotonic()
    world.operator.stop()
    stop_s = time.monotonic() - stop_started
    launched = time.monotonic()
    live_s = world.operator.start()

    def started_up() -> bool:
        m = world.op_metrics()
        events = m.get("wml_operator_secret_events_total")
        listed = events is None or events >= secrets_total
        return listed and m.get("wml_operator_reconciles_total{trigger=resume}", 0) >= resources

    settle_s = wait_quiet(world, timeout, started_up)
    at_settle = world.operator_stats()
    time.sleep(max(0.0, steady_seconds - (time.monotonic() - launched)))
    steady = world.operator_stats()
    m = world.op_metrics()
    return {"resources": resources, "secrets_in_cluster": secrets_total, "stop_s": stop_s, "liveness_s": live_s,
            "settled_s": settle_s, "peak_mb": at_settle.hwm_mb, "rss_at_settle_mb": at_settle.rss_mb,
            "steady_mb": steady.rss_mb, "steady_after_s": time.monotonic() - launched,
            "peak_end_mb": steady.hwm_mb, "cpu_s": steady.cpu_s,
            "secret_events": m.get("wml_operator_secret_events_total"),
            "secret_reads": m.get("wml_operator_secret_reads_total"),
            "secrets_held": m.get("wml_operator_secrets_held"),
            "reconciles": m.get("wml_operator_reconciles_total"), "load_1min": loadavg()}


def counts(world: World) -> dict[str, float]:
    m = world.op_metrics()
    return {"cpu_s": world.operator_stats().cpu_s, "wml": float(len(world.proxy.seen)),
            **{k: m.get(f"wml_operator_{k}_total", math.nan)
               for k in ("secret_events", "secret_reads", "reconciles", "status_writes")},
            **{k.removeprefix("wml_operator_"): v for k, v in m.items()
               if k.startswith("wml_operator_reconciles_total{")}}


def moved(after: dict[str, float], before: dict[str, float], world: World) -> dict[str, Any]:
    """What the operator did between two counts: reads, reconciles (by trigger), status writes, WML requests."""
    seen = world.proxy.seen[int(before["wml"]):int(after["wml"])]
    return {"secret_reads": after["secret_reads"] - before["secret_reads"],
            "reconciles": after["reconciles"] - before["reconciles"],
            "reconciles_by_trigger": {k.split("=", 1)[1].rstrip("}"): after[k] - before.get(k, 0.0)
                                      for k in after if k.startswith("reconciles_total{")
                                      and after[k] - before.get(k, 0.0)},
            "status_writes": after["status_writes"] - before["status_writes"],
            "wml_requests": len(seen), "wml_by_kind": wml_counts(seen)}


def churn(world: World, names: list[tuple[str, str]], updates: int, timeout: float = 120.0) -> dict[str, Any]:
    """`updates` updates of unrelated Secrets; the operator's CPU until it saw them, beside an idle window."""
    chosen = names[:: max(1, len(names) // updates)][:updates]
    wait_quiet(world, 60)
    before = counts(world)
    started = time.monotonic()
    sent_s = update_secrets(world, chosen)
    counted = not math.isnan(before["secret_events"])
    deadline = started + timeout
    while counted and time.monotonic() < deadline:
        if world.op_metrics().get("wml_operator_secret_events_total", 0) - before["secret_events"] >= len(chosen):
            break
        time.sleep(0.05)
    if not counted:  # the old code has no such counter: until its CPU is quiet, minus the quiet it waited
        wait_quiet(world, timeout)
        # The quiet seconds themselves are part of the window; the idle reference of the same length covers them.
    seen_s = time.monotonic() - started
    time.sleep(TRAILING)  # what trails the last event (a wake, a pass) still counts as the churn's
    after = counts(world)
    window = time.monotonic() - started
    idle_before = counts(world)
    idle_started = time.monotonic()
    time.sleep(window)
    idle = counts(world)
    idle_window = time.monotonic() - idle_started
    churn_cpu = after["cpu_s"] - before["cpu_s"]
    idle_cpu = idle["cpu_s"] - idle_before["cpu_s"]
    # The poller re-checks every resource each POLL_SLOW (30 s) whatever the Secrets do: the idle window's own
    # reconciles are the reference for the churn's.
    return {"updates": len(chosen), "sent_s": sent_s, "seen_s": seen_s, "trailing_s": TRAILING, "window_s": window,
            "events_counted": counted, "events": after["secret_events"] - before["secret_events"],
            "cpu_s": churn_cpu, "idle_window_s": idle_window, "idle_cpu_s": idle_cpu, "net_cpu_s": churn_cpu - idle_cpu,
            **moved(after, before, world), "idle": moved(idle, idle_before, world),
            "load_1min": loadavg()}


def rotate(world: World, rounds: int, timeout: float = 60.0) -> dict[str, Any]:
    """Rotates the Kafka Secret of one resource `rounds` times: seconds until the re-create's POST arrives at WML
    and until status.deploymentId changes (read every 50 ms)."""
    assert world.watcher is not None
    core = k8s.CoreV1Api(world.api)
    rows: list[dict[str, Any]] = []
    for i in range(rounds):
        wait_quiet(world, 60)
        old = cast(dict[str, Any], world.custom.get_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL,
                                                                             ROTATED))
        old_id = (old.get("status") or {}).get("deploymentId")
        before = counts(world)
        started = time.monotonic()
        core.patch_namespaced_secret(ROTATED_SECRET, world.namespace, {"stringData": {"password": f"rotated-{i}"}})
        create_s = id_s = None
        while time.monotonic() - started < timeout and (create_s is None or id_s is None):
            if create_s is None:
                post = next((s for s, _ in world.proxy.timed(started) if wml_kind(s) == "create"), None)
                create_s = post.at - started if post is not None else None
            if id_s is None:
                body = cast(dict[str, Any], world.custom.get_namespaced_custom_object(
                    GROUP, VERSION, world.namespace, PLURAL, ROTATED))
                if (body.get("status") or {}).get("deploymentId") not in (None, old_id):
                    id_s = time.monotonic() - started
            time.sleep(0.05)
        world.watcher.wait([ROTATED], settled, timeout=timeout)
        after = counts(world)
        seen = world.proxy.seen[int(before["wml"]):int(after["wml"])]
        rows.append({"create_at_wml_s": create_s, "deployment_id_s": id_s,
                     "wml_writes": sum(1 for s in seen if wml_kind(s) in ("create", "delete", "set-state")),
                     "secret_reads": after["secret_reads"] - before["secret_reads"]})
        log(f"  rotation {i + 1}: create at WML after {create_s if create_s is not None else float('nan'):.2f} s, "
            f"deploymentId after {id_s if id_s is not None else float('nan'):.2f} s")
    worst = [r["deployment_id_s"] for r in rows]
    return {"rounds": rows, "max_s": None if any(v is None for v in worst) else max(worst, default=None)}


def create_resources(world: World, n: int) -> dict[str, Any]:
    """n resources, one of them (ROTATED) with a Kafka Secret of its own, until all are Ready."""
    assert world.watcher is not None
    core = k8s.CoreV1Api(world.api)
    core.create_namespaced_secret(world.namespace, k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name=ROTATED_SECRET),
        string_data={"kafka_brokers_sasl": "127.0.0.1:9", "user": "u", "password": "p"}))
    body = manifest(world.namespace, ROTATED)
    for side in ("input", "output"):
        body["spec"][side]["connectionSecretRef"]["name"] = ROTATED_SECRET
    world.custom.create_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, body)
    names = [f"s-{i:05d}" for i in range(n - 1)]
    started = time.monotonic()
    world.create(world.namespace, names)
    complete = world.watcher.wait([ROTATED, *names], settled, timeout=120 + n)
    return {"n": n, "all_ready_s": time.monotonic() - started, "complete": complete}


# -- figures -------------------------------------------------------------------------------------------------------
def derive(f: dict[str, Any]) -> None:
    """Over-the-reference differences, the per-resource cost and a memory limit recommended from them."""
    m = f["memory"]
    t = f["targets"]
    base, with_s, res, both = (m.get(k) for k in ("none", "secrets", "resources", "both"))
    out: dict[str, Any] = {}
    if base and with_s:
        out["secrets_peak_over_mb"] = with_s["peak_end_mb"] - base["peak_end_mb"]
        out["secrets_steady_over_mb"] = with_s["steady_mb"] - base["steady_mb"]
    if res and both:
        out["resources_secrets_peak_over_mb"] = both["peak_end_mb"] - res["peak_end_mb"]
        out["resources_secrets_steady_over_mb"] = both["steady_mb"] - res["steady_mb"]
    overs = [v for v in out.values()]
    out["met"] = all(v <= t["rss_over_without_mb"] for v in overs) if overs else None
    if base and res and res["resources"]:
        n = res["resources"]
        per_steady = (res["steady_mb"] - base["steady_mb"]) * 1024 / n
        per_peak = (res["peak_end_mb"] - base["peak_end_mb"]) * 1024 / n
        worst_peak = max(r["peak_end_mb"] for r in m.values())
        worst_steady = max(r["steady_mb"] for r in m.values())
        out.update({
            "per_resource_steady_kb": per_steady, "per_resource_peak_kb": per_peak,
            # What fits: the start-up peak grows with the resources, so the limit is divided by the peak's cost.
            "fit_256mi": int((256 - base["peak_end_mb"]) * 1024 / per_peak) if per_peak > 0 else None,
            # Request: the steady RSS at n rounded up to 32 Mi; limit: the worst peak with half again as
            # headroom (a burst of creates, a re-list), rounded up to 64 Mi.
            "recommended_request_mi": int(math.ceil(worst_steady / 32) * 32),
            "recommended_limit_mi": int(math.ceil(worst_peak * 1.5 / 64) * 64),
            "at_resources": n})
    f["derived"] = out
    ch, rot = f.get("churn"), f.get("rotation")
    f["verdicts"] = {"memory": out["met"],
                     "churn": None if not ch else ch["net_cpu_s"] <= t["churn_cpu_s"],
                     "rotation": None if not rot or rot["max_s"] is None else rot["max_s"] <= t["rotation_s"]}


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def report(f: dict[str, Any]) -> str:
    def v(ok: bool | None) -> str:
        return "n/a" if ok is None else "MET" if ok else "MISSED"

    s = f["settings"]
    lines = [f"Operator beside unrelated Secrets; machine: {describe(f['machine'])}",
             f"operator code: {s['operator_tree']}; {s['secrets']:,} Secrets of {SECRET_BYTES // 1024} KB "
             f"({s['secrets_beside']:,} beside the resources); {s['resources']:,} resources", ""]
    for key, what in (("none", "0 Secrets, 0 resources"), ("secrets", "Secrets, 0 resources"),
                      ("resources", "0 Secrets, resources"), ("both", "Secrets, resources")):
        r = f["memory"].get(key)
        if r:
            lines.append(f"  {what:<24} peak {r['peak_end_mb']:6.1f} MB (at settle {r['peak_mb']:.1f})  steady "
                         f"{r['steady_mb']:6.1f} MB  settled {r['settled_s']:.1f} s  reads {r['secret_reads']}  "
                         f"held {r['secrets_held']}  load {r['load_1min']:.1f}")
    d = f.get("derived", {})
    overs = ", ".join(f"{k} {val:+.1f}" for k, val in d.items() if k.endswith("_mb"))
    lines.append(f"  over the run without them: {overs}  target <= +{f['targets']['rss_over_without_mb']:.0f} MB: "
                 f"{v(d.get('met'))}")
    if "per_resource_steady_kb" in d:
        lines.append(f"  per resource: steady {d['per_resource_steady_kb']:.1f} KB, peak "
                     f"{d['per_resource_peak_kb']:.1f} KB; fit in 256Mi by the peak: {d['fit_256mi']}; "
                     f"recommended request {d['recommended_request_mi']}Mi, limit {d['recommended_limit_mi']}Mi")
    ch = f.get("churn")
    if ch:
        lines.append(f"churn: {ch['updates']:,} updates sent in {ch['sent_s']:.1f} s, {ch['events']} events seen in "
                     f"{ch['seen_s']:.1f} s (window {ch['window_s']:.1f} s); operator CPU {ch['cpu_s']:.2f} s, idle "
                     f"{ch['idle_cpu_s']:.2f} s, net "
                     f"{ch['net_cpu_s']:.2f} s  target <= {f['targets']['churn_cpu_s']} s: {v(f['verdicts']['churn'])};"
                     f" reads {ch['secret_reads']}, reconciles {ch['reconciles_by_trigger']}, WML {ch['wml_by_kind']};"
                     f" idle window: reads {ch['idle']['secret_reads']}, reconciles "
                     f"{ch['idle']['reconciles_by_trigger']}, WML {ch['idle']['wml_by_kind']}")
    rot = f.get("rotation")
    if rot:
        lines.append("rotation: " + "; ".join(f"create at WML {_s(r['create_at_wml_s'])}, deploymentId "
                                             f"{_s(r['deployment_id_s'])}" for r in rot["rounds"])
                     + f"  target <= {f['targets']['rotation_s']} s: {v(f['verdicts']['rotation'])}")
    lines.append(f"total {f.get('total_s', 0):.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--secrets", type=int, default=10_000, help="unrelated Secrets (default %(default)s)")
    parser.add_argument("--resources", type=int, default=1000, help="StreamingDeployments (default %(default)s)")
    parser.add_argument("--steady-seconds", type=float, default=60.0,
                        help="seconds after each start when the steady RSS is read (default %(default)s)")
    parser.add_argument("--churn", type=int, default=1000, help="updates of unrelated Secrets (default %(default)s)")
    parser.add_argument("--rotations", type=int, default=3)
    parser.add_argument("--operator-tree", type=Path,
                        help="run the operator code of another checkout (e.g. a `git worktree` of an older commit)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) afterwards")
    args = parser.parse_args(argv)
    # Every namespace, as deploy/operator.yaml: the Secrets of other namespaces come into the watch too.
    operator_env = {"WML_OPERATOR_NAMESPACES": ""}
    tree = "this checkout"
    if args.operator_tree:
        root = args.operator_tree.resolve()
        operator_env["PYTHONPATH"] = os.pathsep.join(str(root / p) for p in ("operator", "server"))
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
        tree = f"{root} ({commit})"
    names = secret_names(args.secrets)
    figures: dict[str, Any] = {
        "machine": machine(), "targets": TARGETS,
        "command": shlex.join(["bench/operator_secrets.py", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {"secrets": args.secrets, "secret_kb": SECRET_BYTES // 1024,
                     "secrets_beside": sum(1 for ns, _ in names if ns == "wso-bench"),
                     "resources": args.resources, "steady_s": args.steady_seconds, "operator_tree": tree,
                     "wml": "WML_SERVER_RUN_STREAMS=false (accept-only)", "operator_env": operator_env},
        "memory": {}}
    started = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def save() -> None:
        figures["total_s"] = time.monotonic() - started
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(figures, indent=2) + "\n")

    timeout = 300.0
    try:
        with World(operator_env=operator_env, keep=args.keep) as world:
            log(f"platform up in {world.timings['platform_s']:.1f} s; operator pid "
                f"{pid_of(world.operator.pid_file) if world.operator else '-'}")
            figures["versions"] = world.versions()
            k8s.CoreV1Api(world.api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=UNRELATED_NS)))
            base = secrets_in_cluster(world)
            log("0 Secrets, 0 resources")
            figures["memory"]["none"] = memory(world, 0, base, args.steady_seconds, timeout)
            log(f"creating {args.secrets:,} Secrets of {SECRET_BYTES // 1024} KB")
            figures["create_secrets_s"] = create_secrets(world, names)
            log(f"  in {figures['create_secrets_s']:.0f} s; apiserver RSS "
                f"{proc_stats(pid_of(world.plane.dir / 'kube-apiserver.pid')).rss_mb:.0f} MB")
            figures["memory"]["secrets"] = memory(world, 0, base + args.secrets, args.steady_seconds, timeout)
            save()
            log(f"{args.resources:,} resources")
            figures["create_resources"] = create_resources(world, args.resources)
            log(f"  all Ready after {figures['create_resources']['all_ready_s']:.0f} s")
            total = secrets_in_cluster(world)
            figures["memory"]["both"] = memory(world, args.resources, total, args.steady_seconds, timeout)
            save()
            log(f"churn: {args.churn:,} updates of unrelated Secrets")
            figures["churn"] = churn(world, names, args.churn)
            log(f"rotation of {ROTATED}'s Kafka Secret, {args.rotations} times")
            figures["rotation"] = rotate(world, args.rotations)
            save()
            log("deleting the unrelated Secrets")
            figures["delete_secrets_s"] = delete_secrets(world, names)
            figures["memory"]["resources"] = memory(world, args.resources, secrets_in_cluster(world),
                                                    args.steady_seconds, timeout)
    finally:
        if figures["memory"]:
            derive(figures)
        save()
    print(report(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
