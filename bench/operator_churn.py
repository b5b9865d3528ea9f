"""The operator's memory under churn: RSS before and after N create -> Ready -> delete -> gone cycles.

    .venv/bin/python bench/operator_churn.py [--cycles 10000] [--wave 100] [--hold 10000] [--json PATH]

The world of bench/operator_scale.py (bench/_operator_world.py): its own kube-apiserver + etcd, the WML service
with WML_SERVER_RUN_STREAMS=false (accept-only) behind a recording proxy, the operator as a process under
deploy/'s RBAC with its default settings, the resources followed with a watch. Phases:

1. warm-up: --warmup cycles in waves, so that what the operator allocates once (imports, kopf's machinery, client
   pools, caches, the arenas a wave needs at its peak) is in before the first figure; then --settle seconds idle
   and the operator's RSS (VmRSS from /proc) is "before";
2. --cycles cycles, --wave resources at a time: create them all, wait until all are Ready, delete them all, wait
   until all are gone (the operator's finalizer deleted their WML deployments); each resource has a name and a
   UID of its own, as in real churn. The RSS is read after every wave;
3. --settle seconds idle, the RSS again: "after"; growth = after - before, per cycle and as the slope of the
   per-wave RSS (least squares); left over: WML deployments on the instance and StreamingDeployments (both 0);
4. with --hold N: N resources created at once, all Ready, the RSS; per resource = (RSS with N - RSS idle) / N,
   the idle one being "after"; then all deleted, and the RSS once they are gone.

Reads the operator from outside (/proc): RSS and its peak (VmHWM), CPU; a count of Python objects would need code
in the operator. Prints figures; asserts nothing. A wave that does not finish in time ends the cycles (the
figures say how many ran) and the process exits 1 after printing what it has.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from _machine import describe, machine
from _operator_world import World, gone, log, settled, wml_counts

TARGETS = {"growth_10000_mb": 5.0, "hold_10000_mb": 400.0}
REFERENCE_CYCLES = 10_000  # the growth target is for this many cycles


class WaveTimeout(RuntimeError):
    pass


def rss(world: World) -> dict[str, float]:
    s = world.operator_stats()
    return {"rss_mb": s.rss_mb, "hwm_mb": s.hwm_mb, "cpu_s": s.cpu_s}


def idle(world: World, seconds: float) -> dict[str, float]:
    """Nothing created or deleted for `seconds`, then the operator's figures."""
    time.sleep(seconds)
    return {**rss(world), "settle_s": seconds}


def wait(world: World, names: list[str], check: Any, what: str, timeout: float) -> float:
    assert world.watcher is not None
    started = time.monotonic()
    if not world.watcher.wait(names, check, timeout=timeout):
        latest = world.watcher.latest()
        pending = [n for n in names if n not in latest or not check(latest[n])]
        raise WaveTimeout(f"{len(pending)} of {len(names)} not {what} after {timeout:.0f} s (e.g. {pending[:3]})")
    return time.monotonic() - started


def wave(world: World, names: list[str], timeout: float) -> dict[str, float]:
    """One wave: create them all, all Ready, delete them all, all gone; the seconds of each step."""
    created = world.create(world.namespace, names)
    ready = wait(world, names, settled, "Ready", timeout)
    deleted = world.delete(world.namespace, names)
    gone_s = wait(world, names, gone, "gone", timeout)
    return {"create_s": created, "ready_s": ready, "delete_s": deleted, "gone_s": gone_s}


def cycles(world: World, prefix: str, total: int, size: int, max_seconds: float | None,
           progress: bool = True) -> dict[str, Any]:
    """`total` cycles in waves of `size`; stops early past `max_seconds` (at a wave's end) or on a wave that does
    not finish in time. Returns what ran, with the RSS after each wave."""
    started = time.monotonic()
    waves: list[dict[str, float]] = []
    done, error = 0, None
    timeout = 120.0 + 2.0 * size
    while done < total:
        names = [f"{prefix}-{i:05d}" for i in range(done, min(done + size, total))]
        try:
            steps = wave(world, names, timeout)
        except Exception as exc:  # a wave not done in time, or the apiserver failing under load: figures so far
            error = f"{type(exc).__name__}: {exc}"
            log(f"{prefix}: wave at {done} did not finish: {exc}")
            break
        done += len(names)
        elapsed = time.monotonic() - started
        row = {"cycles": done, "t_s": elapsed, **rss(world), **steps}
        waves.append(row)
        if progress:
            log(f"{prefix}: {done:,}/{total:,} cycles in {elapsed:.0f} s ({done / elapsed:.1f}/s); operator RSS "
                f"{row['rss_mb']:.1f} MB (peak {row['hwm_mb']:.1f}), CPU {row['cpu_s']:.0f} s")
        if max_seconds is not None and elapsed >= max_seconds and done < total:
            log(f"{prefix}: stopping at {done:,} cycles: --max-minutes reached")
            break
    seconds = time.monotonic() - started
    return {"requested": total, "done": done, "wave": size, "seconds": seconds,
            "per_s": done / seconds if seconds else None, "complete": done == total, "error": error, "waves": waves}


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else None


def leftovers(world: World) -> dict[str, int]:
    return {"wml_deployments": len(world.wml_client().list_instance_deployments()),
            "streamingdeployments": world.resources(world.namespace)}


def hold(world: World, out: dict[str, Any], n: int, idle_mb: float, settle: float, timeout: float) -> None:
    """N resources at once: all Ready, the RSS; then all deleted, and the RSS once they are gone. `timeout`
    bounds the wait for all Ready, and for all gone. Fills `out` as it goes, so a failure keeps what was measured."""
    names = [f"hold-{i:05d}" for i in range(n)]
    out.update({"n": n, "idle_rss_mb": idle_mb, "complete": False})
    started = time.monotonic()
    out["create_s"] = world.create(world.namespace, names)
    try:
        wait(world, names, settled, "Ready", timeout - (time.monotonic() - started))
        out["all_ready_s"] = time.monotonic() - started
        out["complete"] = True
    except WaveTimeout as exc:
        out["all_ready_s"], out["error"] = None, str(exc)
    assert world.watcher is not None
    latest = world.watcher.latest()
    out["ready"] = sum(1 for name in names if name in latest and settled(latest[name]))
    at_n = idle(world, settle)
    out.update({"rss_mb": at_n["rss_mb"], "hwm_mb": at_n["hwm_mb"], "cpu_s": at_n["cpu_s"], "settle_s": settle})
    out["per_resource_kb"] = (at_n["rss_mb"] - idle_mb) * 1024 / max(out["ready"], 1)
    log(f"hold: {out['ready']:,}/{n:,} Ready after {out['all_ready_s'] or float('nan'):.0f} s; operator RSS "
        f"{at_n['rss_mb']:.1f} MB (idle {idle_mb:.1f}): {out['per_resource_kb']:.1f} KB per resource")
    # One DELETE each, 16 in flight: a deletecollection of 10,000 outlives the apiserver's 60 s request timeout
    # (504) although the deletion goes on.
    started = time.monotonic()
    try:
        out["delete_s"] = world.delete(world.namespace, names)
        wait(world, names, gone, "gone", timeout)
        out["all_gone_s"] = time.monotonic() - started
    except Exception as exc:  # a timeout, or the apiserver failing under load: the figures so far
        out["all_gone_s"], out["delete_error"] = None, f"{type(exc).__name__}: {exc}"
    log(f"hold: all gone after {out['all_gone_s'] or float('nan'):.0f} s")
    after = idle(world, settle)
    out["after_delete_rss_mb"] = after["rss_mb"]
    out["left"] = leftovers(world)


# -- the report ---------------------------------------------------------------------------------------------------
def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "MET" if ok else "MISSED"


def growth_verdict(f: dict[str, Any]) -> bool | None:
    at = f.get("growth_at_10000_mb")
    return None if at is None else at <= f["targets"]["growth_10000_mb"]


def hold_verdict(f: dict[str, Any]) -> bool | None:
    h = f.get("hold")
    return None if not h or h["n"] != 10_000 or not h["complete"] else h["rss_mb"] <= f["targets"]["hold_10000_mb"]


def report(f: dict[str, Any]) -> str:
    c, b, a = f["cycles"], f["before"], f["after"]
    lines = [f"Operator memory under churn; machine: {describe(f['machine'])}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in f.get("versions", {}).items()),
             f"command: {f['command']}",
             f"operator environment beyond the defaults: {f['settings']['operator_env'] or 'none'}",
             f"warm-up: {f['warmup']['done']:,} cycles in {f['warmup']['seconds']:.0f} s; idle {b['settle_s']:.0f} s; "
             f"RSS before {b['rss_mb']:.1f} MB (peak {b['hwm_mb']:.1f})",
             f"cycles: {c['done']:,}/{c['requested']:,} in waves of {c['wave']} in {c['seconds']:.0f} s "
             f"({c['per_s'] or 0:.1f}/s){'' if c['complete'] else ' (stopped early: ' + (c['error'] or 'time') + ')'}",
             f"after {a['settle_s']:.0f} s idle: RSS {a['rss_mb']:.1f} MB (peak {a['hwm_mb']:.1f}); growth "
             f"{f['growth_mb']:+.1f} MB, {f['growth_kb_per_cycle']:+.2f} KB per cycle; slope of the per-wave RSS "
             f"{f['trend_kb_per_cycle'] or float('nan'):+.2f} KB per cycle",
             f"  at {REFERENCE_CYCLES:,} cycles: {f['growth_at_10000_mb'] or float('nan'):+.1f} MB"
             f"{' (extrapolated from ' + format(c['done'], ',') + ')' if c['done'] != REFERENCE_CYCLES else ''}; "
             f"target <= {f['targets']['growth_10000_mb']:.0f} MB: {verdict(growth_verdict(f))}",
             f"left over: {f['left']['wml_deployments']} WML deployments, {f['left']['streamingdeployments']} "
             f"StreamingDeployments (target 0 and 0)",
             f"WML requests during the cycles: {f['wml_by_kind']}; operator CPU {a['cpu_s'] - b['cpu_s']:.0f} s"]
    h = f.get("hold")
    if h and "rss_mb" in h:
        lines.append(f"hold: {h['ready']:,}/{h['n']:,} Ready after {h['all_ready_s'] or float('nan'):.0f} s; RSS "
                     f"{h['rss_mb']:.1f} MB (idle {h['idle_rss_mb']:.1f}, peak {h['hwm_mb']:.1f}): "
                     f"{h['per_resource_kb']:.1f} KB per resource; target <= {f['targets']['hold_10000_mb']:.0f} MB "
                     f"at 10,000: {verdict(hold_verdict(f))}")
        lines.append(f"  all gone {h.get('all_gone_s') or float('nan'):.0f} s after the deletes; RSS then "
                     f"{h.get('after_delete_rss_mb') or float('nan'):.1f} MB; left over {h.get('left')}"
                     + (f"; {h['delete_error']}" if h.get("delete_error") else ""))
    elif h:
        lines.append(f"hold: failed before the figures: {h.get('error')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=REFERENCE_CYCLES)
    parser.add_argument("--wave", type=int, default=100, help="resources created, then deleted, at a time")
    parser.add_argument("--warmup", type=int, default=500, help="cycles before the first figure (default %(default)s)")
    parser.add_argument("--settle", type=float, default=30.0, help="idle seconds before each RSS figure")
    parser.add_argument("--max-minutes", type=float, help="end the cycles after this long (at a wave's end)")
    parser.add_argument("--hold", type=int, default=0, metavar="N", help="then N resources at once (e.g. 10000)")
    parser.add_argument("--hold-minutes", type=float, default=30.0,
                        help="how long to wait for the N to be all Ready, and then all gone (default %(default)s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) afterwards")
    parser.add_argument("--operator-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the operator (repeatable); the figures say so")
    args = parser.parse_args(argv)
    operator_env = dict(item.split("=", 1) for item in args.operator_env)
    figures: dict[str, Any] = {
        "machine": machine(), "targets": TARGETS,
        "command": shlex.join(["bench/operator_churn.py", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {"cycles": args.cycles, "wave": args.wave, "warmup": args.warmup, "settle_s": args.settle,
                     "max_minutes": args.max_minutes, "hold": args.hold,
                     "wml": "WML_SERVER_RUN_STREAMS=false (accept-only)", "operator_env": operator_env}}
    started = time.monotonic()
    ok = True
    # kill PID stops the world too (World.close on the way out), as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def save() -> None:
        figures["total_s"] = time.monotonic() - started
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(figures, indent=2) + "\n")

    try:
        with World(operator_env=operator_env, keep=args.keep) as world:
            log(f"platform up in {world.timings['platform_s']:.1f} s, "
                f"operator in {world.timings['operator_start_s']:.1f} s")
            figures["versions"] = world.versions()
            figures["start"] = rss(world)
            log(f"warm-up: {args.warmup} cycles")
            figures["warmup"] = cycles(world, "warm", args.warmup, args.wave, None, progress=False)
            figures["before"] = idle(world, args.settle)
            log(f"before: operator RSS {figures['before']['rss_mb']:.1f} MB after {args.settle:.0f} s idle")
            index = len(world.proxy.seen)
            c = cycles(world, "c", args.cycles, args.wave, args.max_minutes * 60 if args.max_minutes else None)
            figures["wml_by_kind"] = wml_counts(world.proxy.seen[index:])
            figures["after"] = idle(world, args.settle)
            growth = figures["after"]["rss_mb"] - figures["before"]["rss_mb"]
            trend = slope([(0.0, figures["before"]["rss_mb"])] + [(w["cycles"], w["rss_mb"]) for w in c["waves"]])
            figures.update({"cycles": c, "growth_mb": growth,
                            "growth_kb_per_cycle": growth * 1024 / max(c["done"], 1),
                            "trend_kb_per_cycle": trend * 1024 if trend is not None else None,
                            "growth_at_10000_mb": growth * REFERENCE_CYCLES / c["done"] if c["done"] else None,
                            "left": leftovers(world)})
            ok = c["error"] is None
            log(f"after: operator RSS {figures['after']['rss_mb']:.1f} MB ({growth:+.1f} MB); left over "
                f"{figures['left']}")
            save()  # the cycles' figures are on disk even if the hold is stopped
            if args.hold and ok:
                log(f"hold: {args.hold:,} at once")
                figures["hold"] = {}
                try:
                    hold(world, figures["hold"], args.hold, figures["after"]["rss_mb"], args.settle,
                         args.hold_minutes * 60)
                except Exception as exc:  # what the hold measured so far is kept
                    figures["hold"]["error"] = f"{type(exc).__name__}: {exc}"
                    log(f"hold failed: {figures['hold']['error']}")
                ok = bool(figures["hold"].get("complete")) and "delete_error" not in figures["hold"]
    finally:
        save()  # also on a failure or SIGTERM: what was measured so far
    print(report(figures))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
