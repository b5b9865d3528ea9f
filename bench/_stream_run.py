"""One throughput run of bench/stream_throughput.py: a deployment over preloaded records, timed end to end.

The engine runs in this process; the read_committed reader of the output topic runs in a child process (in
this one it would take the GIL from the engine's threads). The model-only rate is measured here too, on the
same records, right before and after each run.
"""

from __future__ import annotations

import contextlib
import cProfile
import json
import multiprocessing
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from _kafka import broker_cpu_seconds, preload, topic_admin
from _machine import cpu_seconds
from wml_localplatform.kafka import KafkaInfo
from wml_server.engine import Engine, KafkaEndpoint, KafkaTopic, StreamOptions, StreamSpec, score_batch
from wml_server.engine.session import StreamSession
from wml_server.engine.state import FAILED, RUNNING, Errors
from wml_server.models.sentiment import SentimentModel

ENGINE, SCORING = "engine", "scoring"  # the stream's threads: Kafka calls and transactions; scoring


def model_rates(payloads: list[bytes], batch: int, runs: int) -> tuple[float, float, list[str]]:
    """(model.predict records/s, score_batch records/s, labels), in batches of `batch`, best of `runs`."""
    model = SentimentModel()
    texts = [json.loads(v)["tweet"] for v in payloads]
    labels: list[str] = []
    best_model = best_score = float("inf")
    for _ in range(runs):
        labels = []
        started = time.perf_counter()
        for i in range(0, len(texts), batch):
            labels += model.predict(texts[i:i + batch])[0]
        best_model = min(best_model, time.perf_counter() - started)
        started = time.perf_counter()
        for i in range(0, len(payloads), batch):
            score_batch(model, payloads[i:i + batch])
        best_score = min(best_score, time.perf_counter() - started)
    return len(texts) / best_model, len(payloads) / best_score, labels


def endpoint_of(info: KafkaInfo) -> KafkaEndpoint:
    user = next((u for u in info.users if u.name == "wml"), info.users[0])
    return KafkaEndpoint(brokers=[info.bootstrap], user=user.name, password=user.password,
                         security_protocol=info.security_protocol,  # type: ignore[arg-type]
                         sasl_mechanism=info.sasl_mechanism)


def read_output(config: dict[str, Any], topic: str, partitions: int, records: int, out: queue.Queue[Any],
                stop: Event) -> None:
    """Child process: reads the output read_committed; says when the first and all `records` keys were in,
    then, once `stop` is set and the topic is drained, every key's count and prediction. The values are parsed
    only then: parsing them as they come would take CPU from the stream it measures, on the same cores."""
    reader = Consumer({**config, "isolation.level": "read_committed", "enable.auto.commit": False})
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    reader.consume(1, 1.0)  # connected before the engine starts
    out.put(("ready", time.monotonic()))
    counts: Counter[bytes] = Counter()
    values: dict[bytes, bytes] = {}
    told: set[str] = set()
    idle = 0
    while idle < 10 or not stop.is_set():
        messages = [m for m in reader.consume(10_000, 0.02) if m.error() is None]
        idle = 0 if messages else idle + 1
        for message in messages:
            counts[message.key() or b""] += 1
            values[message.key() or b""] = message.value() or b"{}"
        if messages and "first" not in told:
            told.add("first")
            out.put(("first", (time.monotonic(), len(counts))))
        if len(counts) >= records and "all" not in told:
            told.add("all")
            out.put(("all", time.monotonic()))
    reader.close()
    predictions = {key: json.loads(value).get("prediction") for key, value in values.items()}
    out.put(("result", (counts, predictions)))


def rss_mb(pid: int | str) -> float:
    """Resident memory of a process in MiB (VmRSS); NaN when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def stream(info: KafkaInfo, payloads: list[bytes], partitions: int, options: StreamOptions, timeout: float,
           threads: dict[str, int]) -> dict[str, Any]:
    """Runs one deployment over `payloads` on fresh topics; its timings and what its output holds."""
    threads.clear()
    run_id = uuid.uuid4().hex[:8]
    topics = (f"bench-tweets-{run_id}", f"bench-scores-{run_id}")
    topic_admin(info, "create", topics, partitions)
    endpoint = endpoint_of(info)
    spec = StreamSpec(f"bench-{run_id}", SentimentModel(), KafkaTopic(topics[0], endpoint),
                      KafkaTopic(topics[1], endpoint))
    reported: dict[str, float] = {}  # status -> when first reported (RUNNING: connected, before any batch)

    def on_status(_id: str, status: str, _errors: Errors) -> None:
        reported.setdefault(status, time.monotonic())

    engine = Engine(options=options, on_status_change=on_status)
    context = multiprocessing.get_context("spawn")
    out: queue.Queue[Any] = context.Queue()  # type: ignore[assignment]
    stop = context.Event()
    config = {**info.client_config(), "group.id": f"bench-reader-{run_id}"}
    child = context.Process(target=read_output, args=(config, topics[1], partitions, len(payloads), out, stop),
                            daemon=True)
    events: dict[str, Any] = {}
    try:
        preload(info, topics[0], payloads)
        child.start()
        events.update([out.get(timeout=60)])
        cpu0 = {"engine process": cpu_seconds("self"), "broker": broker_cpu_seconds(),
                "reader": cpu_seconds(child.pid or 0)}
        rss0 = rss_mb("self")
        started = time.monotonic()
        engine.start(spec)
        workers: list[int] = []
        worker_cpu0 = 0.0
        while "all" not in events and time.monotonic() - started < timeout:
            if not workers and reported.get(RUNNING):
                # Their start-up (imports, the model) is before RUNNING, not part of the stream's CPU.
                workers = engine.scoring_pids(spec.deployment_id)
                worker_cpu0 = sum(cpu_seconds(p) for p in workers)
            try:
                events.update([out.get(timeout=0.1)])
            except queue.Empty:
                state = engine.status(spec.deployment_id)
                if state is not None and state.status == FAILED:
                    raise RuntimeError(f"the stream FAILED: {state.errors}") from None
        cpu = {role: schedstat(thread) for role, thread in threads.items()}
        # What each process beside the stream's own threads used meanwhile: they share the cores with it.
        cpu1 = {"engine process": cpu_seconds("self"), "broker": broker_cpu_seconds(),
                "reader": cpu_seconds(child.pid or 0)}
        if workers:
            cpu0["scoring workers"], cpu1["scoring workers"] = worker_cpu0, sum(cpu_seconds(p) for p in workers)
        memory = {"engine_rss_growth_mb": rss_mb("self") - rss0,
                  "workers_rss_mb": sum(rss_mb(p) for p in workers), "workers": len(workers)}
        engine.stop(spec.deployment_id, timeout=30)
        stop.set()
        while "result" not in events:
            events.update([out.get(timeout=60)])
    finally:
        engine.shutdown()
        stop.set()
        if child.pid is not None:
            child.join(30)
        if child.is_alive():
            child.terminate()  # our own child, by its handle
        topic_admin(info, "delete", topics)
    counts, predictions = events["result"]
    expected = {str(i).encode() for i in range(len(payloads))}
    first_at, first_records = events.get("first", (float("nan"), 0))
    sample = engine.registry.get_sample_value
    seconds = events.get("all", float("nan")) - started
    nan = (float("nan"), float("nan"))
    return {
        "records": len(payloads), "seconds": seconds, "end_to_end_per_s": len(payloads) / seconds,
        "running_seconds": reported.get(RUNNING, float("nan")) - started,
        "first_output_seconds": first_at - started, "first_output_records": first_records,
        "steady_per_s": (len(payloads) - first_records) / (seconds - (first_at - started)),
        "duplicates": sum(counts.values()) - len(counts), "missing": len(expected - set(counts)),
        "unexpected": len(set(counts) - expected), "predictions": predictions,
        "records_errored": engine.status(spec.deployment_id).records_errored,  # type: ignore[union-attr]
        "scoring_seconds": sample("wml_stream_scoring_seconds_sum"),
        "batches": sample("wml_stream_batch_records_count"),
        "transactions_aborted": sample("wml_stream_transactions_aborted_total",
                                       {"deployment_id": spec.deployment_id}),
        "cpu_seconds": {name: cpu1[name] - cpu0[name] for name in cpu0},
        **memory,
        **{f"{role}_thread_on_cpu_seconds": cpu.get(role, nan)[0] for role in (ENGINE, SCORING)},
        **{f"{role}_thread_waiting_for_cpu_seconds": cpu.get(role, nan)[1] for role in (ENGINE, SCORING)},
    }


def instrument(threads: dict[str, int], profiles: dict[str, cProfile.Profile]) -> None:
    """Notes the native id of each stream thread (for its scheduler figures) and runs it under the cProfile
    in `profiles` for its role, if any: cProfile sees only the thread that enables it."""
    run, score = StreamSession.run, getattr(StreamSession, "_score", None)  # none before the scoring thread

    def run_wrapper(self: StreamSession) -> None:
        threads[ENGINE] = threading.get_native_id()
        with profiles[ENGINE] if ENGINE in profiles else contextlib.nullcontext():
            run(self)

    def score_wrapper(self: StreamSession, *args: Any) -> Any:
        threads[SCORING] = threading.get_native_id()
        with profiles[SCORING] if SCORING in profiles else contextlib.nullcontext():
            return score(self, *args)  # type: ignore[misc]

    StreamSession.run = run_wrapper  # type: ignore[method-assign]
    if score is not None:
        StreamSession._score = score_wrapper  # type: ignore[method-assign,assignment]


def schedstat(thread: int) -> tuple[float, float]:
    """Seconds a thread of this process has run on a CPU, and waited for one (Linux; NaN elsewhere)."""
    try:
        on_cpu, waiting = Path(f"/proc/self/task/{thread}/schedstat").read_text().split()[:2]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def bracketed(measure: Callable[[], tuple[float, float, list[str]]], run: Callable[[], dict[str, Any]]
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs `measure` (the model-only rates) right before and right after `run`; the run's figures, and the
    model-only figures: the mean of the two as the reference (what the machine gave the model around the run;
    its speed drifts by 10-20 % from minute to minute here), both kept."""
    before = measure()
    figures = run()
    after = measure()
    return figures, {"model_only_per_s": (before[0] + after[0]) / 2, "score_batch_per_s": (before[1] + after[1]) / 2,
                     "model_only_before_per_s": before[0], "model_only_after_per_s": after[0],
                     "labels": before[2]}
