"""The operator at scale: StreamingDeployments on one accept-only WML instance, each figure beside its reference.

    .venv/bin/python bench/operator_scale.py [--sizes 10,100,1000] [--json PATH]

Starts its own kube-apiserver + etcd (wml_localplatform), a WML service with WML_SERVER_RUN_STREAMS=false (it
accepts deployments and reports them RUNNING or STOPPED without Kafka clients, so 1,000 fit on one machine)
behind a proxy that records every WML request, and the operator as a process under deploy/'s RBAC, watching
one namespace with the default poll intervals (WML_OPERATOR_POLL_FAST_SECONDS=5, _SLOW_SECONDS=30: what users
get). Resources are watched (a Kubernetes watch in this process), not polled. Phases, in this order:

1. memory at N = 0;
2. apply -> Ready, one resource at a time (--latency-samples, after one warm-up): the overhead over the WML
   transition (the create's arrival at the service to its answer, RUNNING: accept-only answers at once);
3. for each N of --sizes: N raw creates in a namespace the operator does not watch (the apiserver alone, the
   limit), then N resources applied at once in the operator's namespace, timed until all are Ready; then
   they are deleted (through the operator's finalizer), except the largest N, which stays for:
4. steady state (--steady-seconds): WML requests, apiserver writes, CPU; beside it one GET per resource per
   interval (what per-object timers calling WML would do): its rate computed, one round of N GETs measured;
5. restart of the operator (SIGTERM, start): time until it re-checked all, WML writes, resources leaving Ready;
6. a flip of spec.state on 100 resources at once, beside 100 raw patches.
apiserver writes come from the apiserver's own apiserver_request_total (every client: the operator's status
and kopf's annotation and finalizer patches, Events; the benchmark's own creates and patches are subtracted)
and, for status writes, from the operator's wml_operator_status_writes_total. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from _machine import describe, machine
from _operator_world import Counters, World, log, settled, wml_kind
from _sdep_watch import Snapshot

POLL_FAST, POLL_SLOW = 5.0, 30.0  # the operator's defaults, left as they are
TARGETS = {"latency_p50_s": 0.5, "latency_p99_s": 2.0, "all_ready_1000_s": 60.0, "all_ready_over_limit": 2.0,
           "wml_per_min": 2.0, "apiserver_writes_per_min": 0.0, "rss_1000_mb": 200.0, "restart_wml_writes": 0,
           "restart_left_ready": 0}
FLIP = 100
COUNT_AFTER = 5.0  # seconds after the last resource got there until requests, writes and CPU are counted


def pct(values: list[float], q: float) -> float:
    """The q-th percentile, linear between the closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ready_times(world: World, names: list[str], since: float, check: Any = settled) -> list[float]:
    assert world.watcher is not None
    return [t - since for n in names if (t := world.watcher.first(n, since, check)) is not None]


# -- phases -------------------------------------------------------------------------------------------------------
def latency(world: World, samples: int, warmup: int = 1) -> dict[str, Any]:
    assert world.watcher is not None
    rows: list[dict[str, float]] = []
    for i in range(warmup + samples):
        name = f"lat-{i:03d}"
        started = time.monotonic()
        world.create(world.namespace, [name])
        if not world.watcher.wait([name], settled, timeout=120):
            raise RuntimeError(f"{name} not Ready after 120 s")
        ready = world.watcher.first(name, started, settled)
        post = next(((s, done) for s, done in world.proxy.timed(started) if wml_kind(s) == "create"), None)
        assert ready is not None, f"{name}: no Ready seen"
        assert post is not None, f"{name}: no create seen at WML"
        seen, answered = post
        transition = answered - seen.at
        row = {"total_s": ready - started, "transition_s": transition, "overhead_s": ready - started - transition,
               "to_create_s": seen.at - started, "after_create_s": ready - answered}
        if i >= warmup:
            rows.append(row)
    deleted = world.delete_all(world.namespace)
    out: dict[str, Any] = {"samples": len(rows), "warmup": warmup, "delete_all_s": deleted}
    for key in ("overhead_s", "total_s", "transition_s", "to_create_s", "after_create_s"):
        values = [r[key] for r in rows]
        out[key] = {"p50": pct(values, 50), "p99": pct(values, 99), "max": max(values, default=float("nan"))}
    return out


def scale(world: World, n: int, keep: bool) -> dict[str, Any]:
    assert world.watcher is not None
    raw = [f"raw-{n}-{i:04d}" for i in range(n)]
    limit = world.create(world.raw_namespace, raw)
    world.delete_all(world.raw_namespace)
    names = [f"s{n}-{i:04d}" for i in range(n)]
    before = Counters.take(world)
    started = time.monotonic()
    applied = world.create(world.namespace, names)
    complete = world.watcher.wait(names, settled, timeout=120 + 1.0 * n)
    times = ready_times(world, names, started)
    time.sleep(COUNT_AFTER)  # writes that trail the last Ready (Events are posted from a queue) count too
    counts = before.since(world)
    row: dict[str, Any] = {
        "n": n, "limit_s": limit, "applied_s": applied, "ready": len(times), "complete": complete,
        "all_ready_s": max(times) if complete else None, "ready_p50_s": pct(times, 50),
        "operator_writes": counts["apiserver_writes_ours"] - n,  # minus the benchmark's creates
        **{k: counts[k] for k in ("wml_requests", "wml_by_kind", "apiserver_writes", "operator_status_writes",
                                   "operator_cpu_s", "service_cpu_s", "cpu_s")},
        "operator_rss_mb": world.operator_stats().rss_mb,
    }
    row["over_limit"] = row["all_ready_s"] / limit if row["all_ready_s"] else None
    # The same number of raw writes as this apply took in all (the creates and every write of the operator).
    row["all_writes"] = counts["apiserver_writes_ours"]
    row["limit_all_writes_s"] = world.replay(world.raw_namespace, raw, row["all_writes"])
    world.delete_all(world.raw_namespace)
    row["over_limit_all_writes"] = row["all_ready_s"] / row["limit_all_writes_s"] if row["all_ready_s"] else None
    if not keep:
        row["delete_all_s"] = world.delete_all(world.namespace)
    return row


def steady(world: World, n: int, seconds: float, settle: float) -> dict[str, Any]:
    time.sleep(settle)
    before = Counters.take(world)
    time.sleep(seconds)
    counts = before.since(world)
    minutes = counts["seconds"] / 60
    out: dict[str, Any] = {
        "n": n, "seconds": counts["seconds"], "settle_s": settle, "poll_slow_s": POLL_SLOW, "poll_fast_s": POLL_FAST,
        "wml_per_min": counts["wml_requests"] / minutes, "wml_by_kind": counts["wml_by_kind"],
        "apiserver_writes": counts["apiserver_writes"],
        "apiserver_writes_per_min": counts["apiserver_writes_ours"] / minutes,
        "status_writes_per_min": counts["operator_status_writes"] / minutes,
        "operator_cpu_per_min_s": counts["operator_cpu_s"] / minutes,
        "service_cpu_per_min_s": counts["service_cpu_s"] / minutes,
        "cpu_per_min_s": {name: cpu / minutes for name, cpu in counts["cpu_s"].items()},
        "operator_rss_mb": world.operator_stats().rss_mb, "operator_hwm_mb": world.operator_stats().hwm_mb,
    }
    # The reference: one GET per resource per interval. Its rate is computed; one round of it is measured here,
    # against the same service through the same proxy, beside one list (what the operator does instead).
    client = world.wml_client()
    service0, started = world.service_stats().cpu_s, time.monotonic()
    ids = [d.id for d in client.list_instance_deployments()]
    list_s, list_cpu = time.monotonic() - started, world.service_stats().cpu_s - service0
    service0, started = world.service_stats().cpu_s, time.monotonic()
    for deployment_id in ids:
        client.get_instance_deployment(deployment_id)
    round_s, round_cpu = time.monotonic() - started, world.service_stats().cpu_s - service0
    out["reference"] = {
        "gets_per_min_computed": n * 60 / POLL_SLOW, "gets_per_min_at_fast_computed": n * 60 / POLL_FAST,
        "round_gets": len(ids), "round_s": round_s, "round_service_cpu_s": round_cpu,
        "service_cpu_per_min_s": round_cpu * 60 / POLL_SLOW, "one_list_s": list_s, "one_list_service_cpu_s": list_cpu,
        "one_list_items": len(ids),
    }
    return out


def restart(world: World, n: int, settle: float) -> dict[str, Any]:
    assert world.operator is not None
    assert world.watcher is not None
    alive = [s for s in world.watcher.latest().values() if not s.deleted]
    ready_before = sum(1 for s in alive if settled(s))
    before = Counters.take(world)
    stopped_at = time.monotonic()
    world.operator.stop()
    stop_s = time.monotonic() - stopped_at
    launched = time.monotonic()
    live_s = world.operator.start()
    rechecked_s = None
    while time.monotonic() - launched < 120 + n:
        resumed = world.op_metrics().get("wml_operator_reconciles_total{trigger=resume}", 0)
        if resumed >= n:
            rechecked_s = time.monotonic() - launched
            break
        time.sleep(0.1)
    time.sleep(settle)  # what the first ticks of the timers do after a restart counts too
    counts = before.since(world)
    metrics = world.op_metrics()  # a new process: its counters start at 0
    return {
        "n": n, "ready_before": ready_before, "resources": len(alive), "stop_s": stop_s, "liveness_s": live_s,
        "rechecked_s": rechecked_s, "resumed": metrics.get("wml_operator_reconciles_total{trigger=resume}", 0),
        "settle_s": settle, "wml_writes": counts["wml_writes"], "wml_by_kind": counts["wml_by_kind"],
        "apiserver_writes": counts["apiserver_writes"], "operator_writes": counts["apiserver_writes_ours"],
        "status_writes": metrics.get("wml_operator_status_writes_total", 0),
        "left_ready": len(world.watcher.left_ready(stopped_at)),
        "operator_cpu_s": world.operator_stats().cpu_s, "operator_rss_mb": world.operator_stats().rss_mb,
    }


def flip(world: World, k: int) -> dict[str, Any]:
    assert world.watcher is not None
    raw = [f"flip-{i:03d}" for i in range(k)]
    world.create(world.raw_namespace, raw)
    limit = world.set_state(world.raw_namespace, raw, "STOPPED")
    world.delete_all(world.raw_namespace)
    names = sorted(n for n, s in world.watcher.latest().items() if settled(s) and s.wml_status == "RUNNING")[:k]

    def stopped(s: Snapshot) -> bool:
        return settled(s) and s.wml_status == "STOPPED"

    before = Counters.take(world)
    started = time.monotonic()
    patched = world.set_state(world.namespace, names, "STOPPED")
    complete = world.watcher.wait(names, stopped, timeout=300)
    times = ready_times(world, names, started, stopped)
    time.sleep(COUNT_AFTER)
    counts = before.since(world)
    return {"k": len(names), "limit_s": limit, "patched_s": patched, "complete": complete,
            "all_reported_s": max(times) if complete else None, "reported_p50_s": pct(times, 50),
            "over_limit": max(times) / limit if complete and times else None,
            "wml_writes": counts["wml_writes"], "wml_by_kind": counts["wml_by_kind"],
            "operator_writes": counts["apiserver_writes_ours"] - len(names),
            "apiserver_writes": counts["apiserver_writes"], "cpu_s": counts["cpu_s"]}


# -- the report ---------------------------------------------------------------------------------------------------
def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "MET" if ok else "MISSED"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def report(f: dict[str, Any]) -> str:
    t = f["targets"]
    lat = f["latency"]
    lines = [f"Operator at scale; machine: {describe(f['machine'])}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in f["versions"].items()),
             f"operator environment beyond the defaults: {f['settings']['operator_env'] or 'none'}",
             f"memory at N=0: {f['memory']['0']:.0f} MB RSS", "",
             f"apply -> Ready, {lat['samples']} resources one at a time (after {lat['warmup']} warm-up):"]
    for key, what in (("overhead_s", "overhead over WML"), ("total_s", "apply -> Ready"),
                      ("transition_s", "WML transition"), ("to_create_s", "apply -> create at WML"),
                      ("after_create_s", "WML answer -> Ready")):
        q = lat[key]
        lines.append(f"  {what:<24} p50 {q['p50']:.3f} s  p99 {q['p99']:.3f} s  max {q['max']:.3f} s")
    lines.append(f"  target p50 <= {t['latency_p50_s']} s: {verdict(lat['overhead_s']['p50'] <= t['latency_p50_s'])}, "
                 f"p99 <= {t['latency_p99_s']} s: {verdict(lat['overhead_s']['p99'] <= t['latency_p99_s'])}")
    lines += ["", "N applied at once: until all Ready, beside N raw creates (the apiserver alone):"]
    for r in f["scale"]:
        at_1000 = r["n"] == 1000
        ok = (r["all_ready_s"] is not None and r["all_ready_s"] <= t["all_ready_1000_s"]
              and r["over_limit"] <= t["all_ready_over_limit"]) if at_1000 else None
        lines.append(f"  N={r['n']:<5} all Ready {_s(r['all_ready_s'])} ({r['ready']}/{r['n']}; "
                     f"p50 {r['ready_p50_s']:.2f} s)"
                     f"  limit {r['limit_s']:.2f} s  ratio {r['over_limit'] or float('nan'):.1f}x  "
                     f"[{verdict(ok)}{'' if at_1000 else ': target at 1,000'}]")
        lines.append(f"          the same number of raw writes as it took in all ({r['all_writes']}: the creates "
                     f"and the operator's): {r['limit_all_writes_s']:.2f} s, ratio "
                     f"{r['over_limit_all_writes'] or float('nan'):.1f}x")
        lines.append("          CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_s"].items()))
        lines.append(f"          WML {r['wml_requests']} requests {r['wml_by_kind']}; operator's apiserver writes "
                     f"{r['operator_writes']} ({r['operator_writes'] / r['n']:.1f}/resource, status "
                     f"{r['operator_status_writes']:.0f}); operator CPU {r['operator_cpu_s']:.1f} s, RSS "
                     f"{r['operator_rss_mb']:.0f} MB")
    s = f["steady"]
    ref = s["reference"]
    lines += ["", f"steady state at N={s['n']} over {s['seconds']:.0f} s (after {s['settle_s']:.0f} s; poll "
              f"{s['poll_fast_s']:.0f} s / {s['poll_slow_s']:.0f} s):",
              f"  WML requests/min         {s['wml_per_min']:8.1f}  {s['wml_by_kind']}  target <= "
              f"{t['wml_per_min']}: {verdict(s['wml_per_min'] <= t['wml_per_min'])}",
              f"  apiserver writes/min     {s['apiserver_writes_per_min']:8.1f}  "
              f"(status {s['status_writes_per_min']:.1f})"
              f"  target 0: {verdict(s['apiserver_writes_per_min'] <= t['apiserver_writes_per_min'])}",
              f"  operator CPU             {s['operator_cpu_per_min_s']:8.2f} s/min; service CPU "
              f"{s['service_cpu_per_min_s']:.2f} s/min; operator RSS {s['operator_rss_mb']:.0f} MB",
              f"  reference, one GET per resource per {s['poll_slow_s']:.0f} s: {ref['gets_per_min_computed']:.0f} "
              f"requests/min (computed; {ref['gets_per_min_at_fast_computed']:.0f} at {s['poll_fast_s']:.0f} s)",
              f"    one round of {ref['round_gets']} GETs measured: {ref['round_s']:.2f} s, service CPU "
              f"{ref['round_service_cpu_s']:.2f} s -> {ref['service_cpu_per_min_s']:.2f} s/min (computed)",
              f"    one list of {ref['one_list_items']} measured: {ref['one_list_s']:.3f} s, service CPU "
              f"{ref['one_list_service_cpu_s']:.3f} s"]
    big = max(f["memory"], key=int)
    lines.append("memory RSS: " + ", ".join(f"N={k}: {v:.0f} MB" for k, v in f["memory"].items())
                 + (f"  target <= {t['rss_1000_mb']} MB at 1,000: {verdict(f['memory'][big] <= t['rss_1000_mb'])}"
                    if big == "1000" else "")
                 + f"; restarted, holding the same {big}: {f['memory_restarted'][big]:.0f} MB")
    r = f["restart"]
    lines += ["", f"restart with {r['ready_before']}/{r['resources']} Ready: stop {r['stop_s']:.1f} s, liveness "
              f"{r['liveness_s']:.1f} s, all re-checked {_s(r['rechecked_s'])} after launch "
              f"({r['resumed']:.0f} resumed)",
              f"  WML writes {r['wml_writes']} (target 0: {verdict(r['wml_writes'] == 0)}), "
              f"requests {r['wml_by_kind']}; "
              f"left Ready {r['left_ready']} (target 0: {verdict(r['left_ready'] == 0)}); apiserver writes "
              f"{r['operator_writes']} {r['apiserver_writes']}"]
    fl = f["flip"]
    lines += ["", f"flip of state on {fl['k']} at once: all report STOPPED after {_s(fl['all_reported_s'])} "
              f"(p50 {fl['reported_p50_s']:.2f} s); {fl['k']} raw patches {fl['limit_s']:.2f} s; WML writes "
              f"{fl['wml_writes']} {fl['wml_by_kind']}; operator's apiserver writes {fl['operator_writes']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000",
                        help="N applied at once, comma-separated (default %(default)s)")
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--steady-seconds", type=float, default=120.0)
    parser.add_argument("--settle-seconds", type=float, default=15.0, help="wait before the steady window")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) afterwards")
    parser.add_argument("--operator-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the operator (repeatable); the figures say so")
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    operator_env = dict(item.split("=", 1) for item in args.operator_env)
    figures: dict[str, Any] = {"machine": machine(), "targets": TARGETS, "sizes": sizes,
                               "settings": {"poll_fast_s": POLL_FAST, "poll_slow_s": POLL_SLOW,
                                            "wml": "WML_SERVER_RUN_STREAMS=false (accept-only)",
                                            "operator_env": operator_env}}
    started = time.monotonic()
    with World(operator_env=operator_env, keep=args.keep) as world:
        log(f"platform up in {world.timings['platform_s']:.1f} s, "
            f"operator in {world.timings['operator_start_s']:.1f} s")
        figures["versions"] = world.versions()
        time.sleep(5)
        figures["memory"] = {"0": world.operator_stats().rss_mb}
        log(f"latency: {args.latency_samples} resources one at a time")
        figures["latency"] = latency(world, args.latency_samples)
        figures["scale"] = []
        for n in sizes:
            log(f"N={n}: raw creates, then applied at once")
            figures["scale"].append(scale(world, n, keep=n == sizes[-1]))
            figures["memory"][str(n)] = figures["scale"][-1]["operator_rss_mb"]
        log(f"steady state at N={sizes[-1]} for {args.steady_seconds:.0f} s")
        figures["steady"] = steady(world, sizes[-1], args.steady_seconds, args.settle_seconds)
        figures["memory"][str(sizes[-1])] = max(figures["memory"][str(sizes[-1])], figures["steady"]["operator_rss_mb"])
        log("restart")
        figures["restart"] = restart(world, sizes[-1], settle=10.0)
        figures["memory_restarted"] = {str(sizes[-1]): figures["restart"]["operator_rss_mb"]}
        log(f"flip of {min(FLIP, sizes[-1])}")
        figures["flip"] = flip(world, min(FLIP, sizes[-1]))
    figures["total_s"] = time.monotonic() - started
    print(report(figures))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
