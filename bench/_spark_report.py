"""The figures of bench/spark_throughput.py, in stream_throughput.py's JSON form (name, value, unit, reference,
target, met), and their printed lines."""

from __future__ import annotations

import math
from statistics import median
from typing import Any

from stream_throughput import _figure
from stream_throughput import summary as figures_summary

TARGET_WORKER_SCALING = 1.6  # 2 workers >= 1.6x one worker (steady rates)
TARGET_PER_CORE = 0.7  # Spark per executor core >= 0.7x the built-in engine per scoring worker
TARGET_P99_MS = 1000.0  # at 1,000 records/s


def _ok(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def figures(builtin: list[dict[str, Any]], every: list[dict[str, Any]], latencies: list[dict[str, Any]],
            cores: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    spark = [r for r in every if r.get("model", "vader") == "vader"]
    user = {r["workers"]: r for r in every if r.get("model") == "sklearn"}
    for r in user.values():
        out.append(_figure(f"sklearn_spark_steady_rate_{r['workers']}_workers_{r['partitions']}_partitions",
                           r["steady_per_s"], "records/s", "the sample scikit-learn model on Spark (a sandboxed "
                           "model worker per Python worker), first output to last; reference: predict() alone on "
                           "one core", reference=r["model_only_per_s"], reference_name="sklearn_model_only_rate",
                           same_unit=True, details={**_details(r), "end_to_end_per_s": r["end_to_end_per_s"]}))
    if 1 in user and 2 in user:
        reference = user[1]["steady_per_s"]
        out.append(_figure("sklearn_spark_worker_scaling_2_vs_1", user[2]["steady_per_s"], "records/s",
                           "the sample scikit-learn model's steady rate with 2 workers beside 1", reference=reference,
                           reference_name="sklearn_spark_steady_rate_1_worker", same_unit=True,
                           target=TARGET_WORKER_SCALING * reference, target_ratio=TARGET_WORKER_SCALING,
                           better="higher"))
    model = [r["model_only_per_s"] for r in builtin + spark]
    if model:
        out.append(_figure("model_only_rate", median(model), "records/s",
                           "VADER alone on one core (predict() in batches), the median of the references measured "
                           "around each throughput run", details={"min": min(model), "max": max(model)}))
    builtin_by = {r["partitions"]: r for r in builtin}
    for r in builtin:
        out.append(_figure(f"builtin_rate_{r['partitions']}_partitions", r["end_to_end_per_s"], "records/s",
                           f"the built-in engine ({r['workers']} scoring workers), {r['records']:,} records, "
                           f"{r['partitions']} partitions, start() until the reader has all",
                           reference=r["model_only_per_s"], reference_name="model_only_rate", same_unit=True,
                           details=_details(r)))
    spark_by = {(r["workers"], r["partitions"]): r for r in spark}
    for r in spark:
        out.append(_figure(f"spark_rate_{r['workers']}_workers_{r['partitions']}_partitions", r["end_to_end_per_s"],
                           "records/s", f"Spark, {r['workers']} worker(s) x 1 core, {r['records']:,} records, "
                           f"{r['partitions']} partitions, SparkEngine.start() until the reader has all (the "
                           "driver's start included)", reference=r["model_only_per_s"],
                           reference_name="model_only_rate", same_unit=True, details=_details(r)))
        out.append(_figure(f"spark_steady_rate_{r['workers']}_workers_{r['partitions']}_partitions",
                           r["steady_per_s"], "records/s", "the same run from its first output record to its last",
                           reference=r["model_only_per_s"], reference_name="model_only_rate", same_unit=True))
    for partitions in sorted({p for _, p in spark_by}):
        one, two = spark_by.get((1, partitions)), spark_by.get((2, partitions))
        if one and two:
            reference = one["steady_per_s"]
            out.append(_figure(
                f"spark_worker_scaling_2_vs_1_{partitions}_partitions", two["steady_per_s"], "records/s",
                f"steady rate with 2 workers beside 1, {partitions} partitions", reference=reference,
                reference_name="spark_steady_rate_1_worker", same_unit=True,
                target=TARGET_WORKER_SCALING * reference, target_ratio=TARGET_WORKER_SCALING, better="higher",
                details={"end_to_end_ratio": two["end_to_end_per_s"] / one["end_to_end_per_s"]}))
    for r in spark:
        base = builtin_by.get(r["partitions"])
        if base is None:
            continue
        reference = base["end_to_end_per_s"] / base["workers"]
        out.append(_figure(
            f"spark_per_core_{r['workers']}_workers_{r['partitions']}_partitions", r["steady_per_s"] / r["workers"],
            "records/s", "Spark's steady rate / its executors' cores (cores_max), beside the built-in engine's "
            f"end-to-end rate / its scoring workers ({base['workers']}), same records and partitions",
            reference=reference, reference_name="builtin_rate_per_core", same_unit=True,
            target=TARGET_PER_CORE * reference, target_ratio=TARGET_PER_CORE, better="higher",
            details={"end_to_end_per_core": r["end_to_end_per_s"] / r["workers"], "cores": cores}))
    for lat in latencies:
        out.append(_figure(
            f"spark_latency_p99_trigger_{lat['trigger_seconds']:g}s", lat["p99_ms"], "ms",
            f"input to output at {lat['rate_per_s']:,.0f} records/s for {lat['seconds']:g} s, trigger "
            f"{lat['trigger_seconds']:g} s, {lat['workers']} worker(s)", target=TARGET_P99_MS, better="lower",
            details={k: lat[k] for k in ("p50_ms", "p90_ms", "max_ms", "mean_ms", "duplicates", "missing")}))
    idle = [lat["running_seconds"] for lat in latencies]
    if idle:
        out.append(_figure("spark_running_seconds_idle", median(idle), "s", "SparkEngine.start() until RUNNING (the "
                           "status callback) on an idle topic: the driver's JVM, session, executors and first "
                           "(empty) trigger; median of the latency runs", details={"min": min(idle),
                                                                                   "max": max(idle)}))
    for key, unit, text in (("running_seconds", "s", "SparkEngine.start() until RUNNING (the status callback) "
                             "with N records waiting: RUNNING follows the first micro-batch's commit"),
                            ("driver_rss_mb", "MiB", "RSS of the driver: python and its JVM"),
                            ("executors_rss_mb", "MiB", "RSS of one executor's JVM"),
                            ("python_workers_rss_mb", "MiB", "RSS of one executor's Python workers")):
        values = [_per_executor(r, key) for r in spark]
        values = [v for v in values if _ok(v)]
        if values:
            out.append(_figure(f"spark_{key}", median(values), unit, text + " (median of the throughput runs, "
                               "peak of 1 s samples in each)", details={"min": min(values), "max": max(values)}))
    return out


def _per_executor(run: dict[str, Any], key: str) -> float:
    value = float(run.get(key, float("nan")))
    if key in ("executors_rss_mb", "python_workers_rss_mb"):
        return value / run["executors"] if run.get("executors") else float("nan")
    return value


def _details(r: dict[str, Any]) -> dict[str, Any]:
    keep = ("workers", "partitions", "load_before", "running_seconds", "first_output_seconds", "steady_per_s",
            "duplicates", "missing", "prediction_mismatches", "model_only_before_per_s", "model_only_after_per_s")
    return {k: r[k] for k in keep if k in r}


def _num(value: Any, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def run_line(r: dict[str, Any]) -> str:
    head = (f"   {r['engine']:<8}{r.get('model', 'vader'):<8}{r['workers']} worker(s) {r['partitions']} partitions: "
            f"{_num(r['end_to_end_per_s'], ',.0f')} records/s end to end ({_num(r['seconds'], '.1f')} s), steady "
            f"{_num(r['steady_per_s'], ',.0f')}/s; RUNNING after {_num(r.get('running_seconds'), '.1f')} s, "
            f"first output {_num(r['first_output_seconds'], '.1f')} s; model alone "
            f"{_num(r['model_only_per_s'], ',.0f')}/s")
    checks = (f"   duplicates {r['duplicates']}, missing {r['missing']}, unexpected {r['unexpected']}, errored "
              f"{r.get('records_errored')}, prediction mismatches {r['prediction_mismatches']}")
    if r["engine"] == "spark":
        checks += (f"; RSS driver {_num(r.get('driver_rss_mb'), ',.0f')} MiB ({r.get('driver_processes', 0)} "
                   f"processes), {r.get('executors', 0)} executor(s) {_num(r.get('executors_rss_mb'), ',.0f')} MiB, "
                   f"{r.get('python_workers', 0)} Python workers {_num(r.get('python_workers_rss_mb'), ',.0f')} MiB")
    else:
        checks += f"; scoring workers {_num(r.get('workers_rss_mb'), ',.0f')} MiB RSS"
    return head + "\n" + checks


def latency_line(lat: dict[str, Any]) -> str:
    met = "met" if lat["p99_ms"] <= TARGET_P99_MS else "MISSED"
    return (f"   trigger {lat['trigger_seconds']:g} s: {lat['records_sent']:,} records at "
            f"{lat['send_rate_per_s']:,.0f}/s, {lat['records_measured']:,} measured: p50 {lat['p50_ms']:.0f} ms, "
            f"p90 {lat['p90_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms (target p99 <= "
            f"{TARGET_P99_MS:g} ms: {met}); duplicates {lat['duplicates']}, missing {lat['missing']}; RUNNING "
            f"after {lat['running_seconds']:.1f} s (idle topic), warm after {lat['warm_seconds']:.1f} s")


def summary(document: dict[str, Any]) -> str:
    lines = [figures_summary(document)]
    lat = document["latency_runs"]
    if lat:
        best = min(lat, key=lambda r: r["p99_ms"])
        lines.append(f"best p99: trigger {best['trigger_seconds']:g} s, p99 {best['p99_ms']:.0f} ms, p50 "
                     f"{best['p50_ms']:.0f} ms")
    lines.append("per core: Spark steady rate / executor cores (cores_max = workers) vs built-in end-to-end rate / "
                 "scoring workers; scaling: 2 workers' steady rate / 1 worker's")
    return "\n".join(lines)
