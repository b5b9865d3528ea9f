"""One Spark stream of bench/spark_throughput.py: a StreamSpec run through SparkEngine in this process, its driver
a process of its own on a real standalone cluster; throughput over preloaded records, or latency at a fixed rate.

The readers (and the latency run's producer) are the children bench/_stream_run.py and bench/_stream_latency.py
use for the built-in engine, so both engines are measured the same way.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_END

from _kafka import preload, topic_admin
from _spark_procs import MemorySampler, driver_pid, stream_memory
from _stream_latency import QUANTILES, measure, quantile, read_latencies, send_at_rate
from _stream_run import endpoint_of, read_output
from wml_localplatform.kafka import KafkaInfo
from wml_server.engine import KafkaTopic, StreamSpec
from wml_server.engine.state import FAILED, RUNNING, Errors
from wml_server.models.sentiment import SentimentModel
from wml_server.spark.supervisor import SparkEngine, SparkOptions

VADER = {"kind": "builtin", "id": "3b1f3d7e-5c1a-4d8e-9b7a-6f0e2c9d4a11"}
WARMUP_RECORDS = 200


class _Run:
    """A SparkEngine with one deployment on fresh topics; when each status was first reported."""

    def __init__(self, info: KafkaInfo, state_root: Path, options: SparkOptions, partitions: int,
                 name: str) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.topics = (f"bench-spark-{name}-in-{self.run_id}", f"bench-spark-{name}-out-{self.run_id}")
        self.info, self.partitions = info, partitions
        endpoint = endpoint_of(info)
        self.spec = StreamSpec(f"bench-spark-{name}-{self.run_id}", SentimentModel(),
                               KafkaTopic(self.topics[0], endpoint), KafkaTopic(self.topics[1], endpoint))
        self.reported: dict[str, float] = {}
        self.errors: Errors = []
        self.engine = SparkEngine(state_root, self._on_status, options)
        self.state_dir = state_root / self.spec.deployment_id

    def _on_status(self, _id: str, status: str, errors: Errors) -> None:
        self.reported.setdefault(status, time.monotonic())
        if errors:
            self.errors = list(errors)

    def check(self) -> None:
        if FAILED in self.reported:
            raise RuntimeError(f"the Spark stream FAILED: {self.errors}; see {self.state_dir / 'driver.log'}")

    def remove(self) -> None:
        self.engine.remove(self.spec)
        self.engine.shutdown()


def _children_done(children: list[Any]) -> None:
    for child in children:
        if child.pid is not None:
            child.join(30)
        if child.is_alive():
            child.terminate()  # our own child, by its handle


def spark_stream(info: KafkaInfo, payloads: list[bytes], partitions: int, options: SparkOptions, master: str,
                 worker_pids: list[int], state_root: Path, timeout: float,
                 model: dict[str, Any] | None = None) -> dict[str, Any]:
    """N preloaded records through one Spark deployment, timed from SparkEngine.start() until a read_committed
    reader child has all N; the driver's and executors' memory meanwhile (peak of 1 s samples)."""
    run = _Run(info, state_root, options, partitions, "tp")
    topic_admin(info, "create", run.topics, partitions)
    context = multiprocessing.get_context("spawn")
    out: queue.Queue[Any] = context.Queue()  # type: ignore[assignment]
    stop = context.Event()
    config = {**info.client_config(), "group.id": f"bench-reader-{run.run_id}"}
    child = context.Process(target=read_output, args=(config, run.topics[1], partitions, len(payloads), out, stop),
                            daemon=True)
    events: dict[str, Any] = {}
    memory: dict[str, float] = {}
    try:
        preload(info, run.topics[0], payloads)
        child.start()
        events.update([out.get(timeout=60)])
        started = time.monotonic()
        run.engine.start(run.spec, master, model or VADER)
        with MemorySampler(lambda: stream_memory(driver_pid(run.state_dir), worker_pids)) as sampler:
            while "all" not in events and time.monotonic() - started < timeout:
                try:
                    events.update([out.get(timeout=0.2)])
                except queue.Empty:
                    run.check()
            # RUNNING is reported once the first micro-batch has committed: it can come after the last record.
            while RUNNING not in run.reported and time.monotonic() - started < timeout:
                time.sleep(0.1)
        memory = dict(sampler.peak)
        state = run.engine.status(run.spec.deployment_id)
        stop.set()
        while "result" not in events:
            events.update([out.get(timeout=60)])
    finally:
        stop.set()
        run.remove()
        _children_done([child])
        topic_admin(info, "delete", run.topics)
    counts, predictions = events["result"]
    expected = {str(i).encode() for i in range(len(payloads))}
    first_at, first_records = events.get("first", (float("nan"), 0))
    seconds = events.get("all", float("nan")) - started
    running = run.reported.get(RUNNING, float("nan")) - started
    return {
        "records": len(payloads), "seconds": seconds, "end_to_end_per_s": len(payloads) / seconds,
        "running_seconds": running, "first_output_seconds": first_at - started,
        "first_output_records": first_records,
        "steady_per_s": (len(payloads) - first_records) / (seconds - (first_at - started)),
        "duplicates": sum(counts.values()) - len(counts), "missing": len(expected - set(counts)),
        "unexpected": len(set(counts) - expected), "predictions": predictions,
        "records_errored": state.records_errored if state else None, **memory,
    }


def spark_latency(info: KafkaInfo, texts: list[str], options: SparkOptions, master: str, state_root: Path,
                  rate: float, seconds: float, timeout: float) -> dict[str, Any]:
    """One Spark deployment on a fresh 1-partition topic, RUNNING, then warm: WARMUP_RECORDS records scored and
    committed (the executors' Python workers start and load the model on the first records: 20-60 s here, not a
    steady latency), before a producer child sends `rate` records/s for `seconds`; arrival minus send time of
    each record at a read_committed reader child that starts past the warm-up's output."""
    count = int(rate * seconds)
    run = _Run(info, state_root, options, 1, "lat")
    topic_admin(info, "create", run.topics, 1)
    context = multiprocessing.get_context("spawn")
    out: queue.Queue[Any] = context.Queue()  # type: ignore[assignment]
    stop = context.Event()
    base = info.client_config()
    reader = context.Process(target=read_latencies, daemon=True,
                             args=({**base, "group.id": f"bench-latency-{run.run_id}"}, run.topics[1], count, out,
                                   stop, OFFSET_END))
    sender = context.Process(target=send_at_rate, args=(base, run.topics[0], texts, rate, count, out), daemon=True)
    events: dict[str, Any] = {}
    try:
        started = time.monotonic()
        run.engine.start(run.spec, master, VADER)
        # The driver reports RUNNING once the query has made progress (an empty trigger on an idle topic).
        while RUNNING not in run.reported and time.monotonic() - started < timeout:
            run.check()
            time.sleep(0.2)
        if RUNNING not in run.reported:
            raise RuntimeError(f"the Spark stream was not RUNNING after {timeout:g} s")
        running = run.reported[RUNNING] - started
        preload(info, run.topics[0], [json.dumps({"tweet": texts[i % len(texts)], "id": i}).encode()
                                      for i in range(WARMUP_RECORDS)])
        while time.monotonic() - started < timeout:
            state = run.engine.status(run.spec.deployment_id)
            if state is not None and state.records_in >= WARMUP_RECORDS:
                break
            run.check()
            time.sleep(0.2)
        warm = time.monotonic() - started
        measure(reader, sender, out, stop, events, seconds + timeout, run.check)
    finally:
        stop.set()
        run.remove()
        _children_done([sender, reader])
        topic_admin(info, "delete", run.topics)
    result, sent = events["result"], events["sent"]
    ordered = sorted(result["latencies"])
    return {
        "trigger_seconds": options.trigger_seconds, "rate_per_s": rate, "seconds": seconds, "records": count,
        "records_sent": sent["records"],
        "send_rate_per_s": sent["records"] / sent["seconds"] if sent["seconds"] else float("nan"),
        "max_behind_schedule_ms": sent["max_behind_schedule_s"] * 1000,
        "records_measured": len(ordered), "duplicates": result["duplicates"], "missing": result["missing"],
        **{f"{name}_ms": quantile(ordered, q) * 1000 for name, q in QUANTILES.items()},
        "mean_ms": sum(ordered) / len(ordered) * 1000 if ordered else float("nan"),
        "running_seconds": running, "warm_seconds": warm,
    }
