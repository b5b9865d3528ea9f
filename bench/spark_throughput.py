"""Streams on Spark end to end (issue 18, section 5), beside the built-in engine and the model alone.

    .venv/bin/python bench/spark_throughput.py [--records N] [--workers 1,2] [--partitions 2,4]
        [--triggers 0,0.5,1] [--latency-rate 1000 --latency-seconds 30] [--json PATH]

The real path: a StreamSpec run through SparkEngine in this process (its driver a process of its own, as the
service runs it) with the VADER model, on a standalone SparkCluster this starts (1 worker, then 2, each
`--cores 1`; SparkOptions(jars=the Kafka connector's, executor_memory 1g, cores_max=the workers)) and a real
broker (bench/_kafka.py). Everything binds 127.0.0.1 (SPARK_LOCAL_IP). Measured:

- Throughput: N JSON tweets preloaded on a fresh topic, timed from SparkEngine.start() until a read_committed
  reader child process has all N (0 duplicates, 0 missing checked), for each worker count x partition count.
  That time holds the driver's start (a JVM, the session, the executors: 15-30 s), so it also gives `steady`:
  the records after the first output over the time from the first output to the last (the warm rate).
  Beside it: the built-in engine on the same records and partitions (bench/_stream_run.py, --builtin-workers
  scoring workers, the service's default), and the model alone on one core (its model-only rate).
- Targets: 2 workers' steady rate >= 1.6x one worker's; per core, Spark >= 0.7x the built-in engine, where
  per core is Spark's steady rate / the executors' cores (cores_max = workers) against the built-in engine's
  end-to-end rate / its scoring workers (the cores). Both engines share the machine's cores with the broker,
  the reader and (Spark) the driver and daemons: that is not counted in either "cores used".
- Latency: a producer child at --latency-rate records/s for --latency-seconds, a read_committed reader child
  (bench/_stream_latency.py), the deployment RUNNING before the first record; for each trigger interval
  (SparkOptions.trigger_seconds; 0: the next micro-batch as soon as the last committed), on the largest
  cluster. p50, p99; target p99 <= 1 s.
- Cost: RSS of the driver (python and its JVM), the executors' JVMs and their Python workers, the peak of
  1 s samples while a throughput stream runs; seconds from start() to RUNNING (the status callback).

The machine's load average is printed before each measurement (other work on the same cores lowers every
figure). --json PATH writes the figures as stream_throughput.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # the driver (a child of this process) binds and advertises it

from _kafka import kafka
from _machine import describe, machine
from _spark_report import figures, latency_line, run_line, summary
from _spark_run import spark_latency, spark_stream
from _stream_run import bracketed, model_rates, stream
from _tweets import load_tweets, tweet_records
from wml_localplatform.config import PlatformConfig
from wml_localplatform.spark import SparkCluster
from wml_server.engine import StreamOptions
from wml_server.spark.supervisor import SparkOptions

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {CORES} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000, help="records per throughput run (%(default)s)")
    parser.add_argument("--workers", type=_ints, default=[1, 2], help="Spark worker counts, one cluster each")
    parser.add_argument("--partitions", type=_ints, default=[2, 4], help="input partition counts")
    parser.add_argument("--models", type=lambda t: [m.strip() for m in t.split(",") if m.strip()],
                        default=["vader"], help="vader (every figure) and/or sklearn (the sample scikit-learn model: "
                        "Spark throughput on the largest partition count beside the model alone; needs it on Spark)")
    parser.add_argument("--triggers", type=_floats, default=[0.0, 0.5, 1.0],
                        help="trigger intervals (s) of the latency runs; '' for none")
    parser.add_argument("--builtin-workers", type=int, default=CORES,
                        help="the built-in engine's scoring workers (default: the cores, %(default)s)")
    parser.add_argument("--latency-rate", type=float, default=1000.0)
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on a run after this many seconds")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    before = machine()
    print(f"machine: {describe(before)}", flush=True)
    payloads = tweet_records(args.records)
    texts = [t.text for t in load_tweets()]
    config = PlatformConfig.load()
    libs = config.spark_kafka_libs()
    jars = tuple(sorted(str(p) for p in libs.glob("*.jar")))
    builtin_options = StreamOptions(scoring_workers=args.builtin_workers)
    builtin: list[dict[str, Any]] = []
    spark: list[dict[str, Any]] = []
    latencies: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="wso-bench-spark-"))
    vader = "vader" in args.models
    sklearn: tuple[Any, dict[str, Any]] | None = None
    if "sklearn" in args.models:
        from _spark_sklearn import sklearn_model

        sklearn = sklearn_model(scratch)
    with kafka() as info:
        if vader:
            print(f"-- warm-up, built-in engine ({load()})", flush=True)
            stream(info, payloads[:10_000], 1, builtin_options, args.timeout, {})
        for partitions in args.partitions if vader else []:
            print(f"-- built-in engine, {partitions} partitions ({load()})", flush=True)
            taken = load()
            run, model = bracketed(partial(model_rates, payloads, StreamOptions.batch_size, 1),
                                   partial(stream, info, payloads, partitions, builtin_options, args.timeout, {}))
            builtin.append(_row("builtin", run, model, partitions, args.builtin_workers, taken))
            print(run_line(builtin[-1]), flush=True)
        for workers in args.workers:
            cluster = SparkCluster(config, scratch / f"cluster-{workers}", workers=workers)
            try:
                cluster_info = cluster.start()
                print(f"-- Spark cluster {cluster_info.master_url}: {workers} worker(s) x 1 core, ready in "
                      f"{cluster_info.ready_seconds:.1f} s", flush=True)
                options = SparkOptions(jars=jars, executor_memory="1g", cores_max=workers)
                for partitions in args.partitions if vader else []:
                    print(f"-- Spark, {workers} worker(s), {partitions} partitions ({load()})", flush=True)
                    taken = load()
                    run, model = bracketed(
                        partial(model_rates, payloads, StreamOptions.batch_size, 1),
                        partial(spark_stream, info, payloads, partitions, options, cluster_info.master_url,
                                cluster_info.worker_pids, scratch / "state", args.timeout))
                    spark.append(_row("spark", run, model, partitions, workers, taken))
                    print(run_line(spark[-1]), flush=True)
                if sklearn is not None:
                    from _spark_sklearn import sklearn_rates

                    partitions = max(args.partitions)
                    print(f"-- Spark, scikit-learn, {workers} worker(s), {partitions} partitions ({load()})",
                          flush=True)
                    taken = load()
                    run, model = bracketed(
                        partial(sklearn_rates, sklearn[0], payloads, StreamOptions.batch_size),
                        partial(spark_stream, info, payloads, partitions, options, cluster_info.master_url,
                                cluster_info.worker_pids, scratch / "state", args.timeout, sklearn[1]))
                    spark.append({**_row("spark", run, model, partitions, workers, taken), "model": "sklearn"})
                    print(run_line(spark[-1]), flush=True)
                if vader and workers == max(args.workers) and args.latency_rate > 0:
                    for trigger in args.triggers:
                        print(f"-- latency on Spark, {workers} worker(s), trigger {trigger:g} s ({load()})",
                              flush=True)
                        taken = load()
                        result = spark_latency(info, texts, SparkOptions(jars=jars, executor_memory="1g",
                                                                         cores_max=workers,
                                                                         trigger_seconds=trigger),
                                               cluster_info.master_url, scratch / "state", args.latency_rate,
                                               args.latency_seconds, args.timeout)
                        latencies.append({"workers": workers, "load_before": taken, **result})
                        print(latency_line(latencies[-1]), flush=True)
            finally:
                cluster.destroy()
    shutil.rmtree(scratch, ignore_errors=True)
    settings = {"records": args.records, "batch_size": StreamOptions.batch_size, "spark_workers": args.workers,
                "partitions": args.partitions, "builtin_scoring_workers": args.builtin_workers,
                "executor_memory": "1g", "worker_cores": 1, "triggers_s": args.triggers,
                "max_records_per_batch": SparkOptions.max_records_per_batch,
                "latency_rate_per_s": args.latency_rate, "latency_seconds": args.latency_seconds,
                "pyspark": _pyspark_version(), "spark_jars": [Path(j).name for j in jars]}
    document = {"benchmark": "spark_throughput", "command": " ".join(["bench/spark_throughput.py", *sys.argv[1:]]),
                "settings": {**settings, "models": args.models}, "kafka": info.version, "machine": before,
                "figures": figures(builtin, spark, latencies, CORES),
                "builtin_runs": builtin, "spark_runs": spark, "latency_runs": latencies}
    print(summary(document))
    if args.json:
        from stream_throughput import _no_nan

        args.json.write_text(json.dumps(_no_nan(document), indent=2, allow_nan=False) + "\n")
        print(f"JSON: {args.json}")
    return 0


def _row(engine: str, run: dict[str, Any], model: dict[str, Any], partitions: int, workers: int,
         taken: str) -> dict[str, Any]:
    labels = model.pop("labels")
    predictions = run.pop("predictions")
    mismatched = sum(predictions.get(str(i).encode(), label) != label for i, label in enumerate(labels))
    keep = ("records", "seconds", "end_to_end_per_s", "running_seconds", "first_output_seconds",
            "first_output_records", "steady_per_s", "duplicates", "missing", "unexpected", "records_errored",
            "driver_rss_mb", "driver_processes", "executors_rss_mb", "executors", "python_workers_rss_mb",
            "python_workers", "workers_rss_mb", "engine_rss_growth_mb")
    return {"engine": engine, "model": "vader", "partitions": partitions, "workers": workers, "load_before": taken,
            "at": time.strftime("%H:%M:%S"), **{k: run[k] for k in keep if k in run}, **model,
            "prediction_mismatches": mismatched}


def _pyspark_version() -> str:
    from importlib import metadata

    return metadata.version("pyspark")


if __name__ == "__main__":
    raise SystemExit(main())
