"""One stream deployment end to end on a real broker, beside the model alone on the same records.

    PYTHONPATH=operator:server:hack .venv/bin/python bench/stream_throughput.py [--records N] [--partitions P]

Kafka: a local broker in a temporary folder, or WSO_KAFKA_BOOTSTRAP & co (bench/_kafka.py). Preloads N JSON
tweets ({"tweet", "id"}, keyed by id; VADER's ground-truth texts, cycled) on a fresh input topic, starts the
engine on them, and times engine.start() until a read_committed consumer of the output topic has all N. That
consumer runs in a child process: in this one it would take the GIL from the engine's thread. A warm-up
stream runs first (--warmup), so a fresh broker's one-time costs (internal topics, JIT) are not counted.
Prints figures and the exactly-once check (duplicates, missing); asserts nothing about time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import multiprocessing
import pstats
import queue
import threading
import time
import uuid
from collections import Counter
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from _kafka import kafka, preload, topic_admin
from _machine import describe, machine
from _tweets import tweet_records
from localplatform.kafka import KafkaInfo
from wml_server.engine import Engine, KafkaEndpoint, KafkaTopic, StreamOptions, StreamSpec, score_batch
from wml_server.engine.session import StreamSession
from wml_server.engine.state import FAILED, RUNNING, Errors
from wml_server.models.sentiment import SentimentModel

TARGET_RATIO = 0.8  # end to end >= 0.8x the model-only rate, on one core


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


def read_output(config: dict[str, Any], topic: str, partitions: int, records: int, out: queue.Queue[Any],
                stop: Event) -> None:
    """Child process: reads the output read_committed; says when the first and all `records` keys were in,
    then, once `stop` is set and the topic is drained, every key's count and prediction."""
    reader = Consumer({**config, "isolation.level": "read_committed", "enable.auto.commit": False})
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    reader.consume(1, 1.0)  # connected before the engine starts
    out.put(("ready", time.monotonic()))
    counts: Counter[bytes] = Counter()
    predictions: dict[bytes, str] = {}
    told: set[str] = set()
    idle = 0
    while idle < 10 or not stop.is_set():
        messages = [m for m in reader.consume(10_000, 0.1) if m.error() is None]
        idle = 0 if messages else idle + 1
        for message in messages:
            counts[message.key() or b""] += 1
            predictions[message.key() or b""] = json.loads(message.value() or b"{}").get("prediction")
        if messages and "first" not in told:
            told.add("first")
            out.put(("first", (time.monotonic(), len(counts))))
        if len(counts) >= records and "all" not in told:
            told.add("all")
            out.put(("all", time.monotonic()))
    reader.close()
    out.put(("result", (counts, predictions)))


def stream(info: KafkaInfo, payloads: list[bytes], partitions: int, batch: int, timeout: float,
           threads: list[int]) -> dict[str, Any]:
    """Runs one deployment over `payloads` on fresh topics; its timings and what its output holds."""
    threads.clear()
    run_id = uuid.uuid4().hex[:8]
    topics = (f"bench-tweets-{run_id}", f"bench-scores-{run_id}")
    topic_admin(info, "create", topics, partitions)
    user = next((u for u in info.users if u.name == "wml"), info.users[0])
    endpoint = KafkaEndpoint(brokers=[info.bootstrap], user=user.name, password=user.password,
                             security_protocol=info.security_protocol,  # type: ignore[arg-type]
                             sasl_mechanism=info.sasl_mechanism)
    spec = StreamSpec(f"bench-{run_id}", SentimentModel(), KafkaTopic(topics[0], endpoint),
                      KafkaTopic(topics[1], endpoint))
    reported: dict[str, float] = {}  # status -> when first reported (RUNNING: connected, before any batch)

    def on_status(_id: str, status: str, _errors: Errors) -> None:
        reported.setdefault(status, time.monotonic())

    engine = Engine(options=StreamOptions(batch_size=batch), on_status_change=on_status)
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
        started = time.monotonic()
        engine.start(spec)
        while "all" not in events and time.monotonic() - started < timeout:
            try:
                events.update([out.get(timeout=0.1)])
            except queue.Empty:
                state = engine.status(spec.deployment_id)
                if state is not None and state.status == FAILED:
                    raise RuntimeError(f"the stream FAILED: {state.errors}") from None
        on_cpu, waiting = schedstat(threads[0]) if threads else (float("nan"), float("nan"))
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
    return {
        "seconds": events.get("all", float("nan")) - started,
        "running_seconds": reported.get(RUNNING, float("nan")) - started,
        "first_output_seconds": first_at - started, "first_output_records": first_records,
        "duplicates": sum(counts.values()) - len(counts), "missing": len(expected - set(counts)),
        "unexpected": len(set(counts) - expected), "predictions": predictions,
        "records_errored": engine.status(spec.deployment_id).records_errored,  # type: ignore[union-attr]
        "scoring_seconds": sample("wml_stream_scoring_seconds_sum"),
        "batches": sample("wml_stream_batch_records_count"),
        "engine_on_cpu_seconds": on_cpu, "engine_waiting_for_cpu_seconds": waiting,
    }


def instrument(threads: list[int], profiles: list[cProfile.Profile]) -> None:
    """Notes each engine thread's id (for its scheduler figures) and runs it under the profiles in `profiles`
    at its start: cProfile sees only the thread that enables it."""
    run = StreamSession.run

    def wrapper(self: StreamSession) -> None:
        threads.append(threading.get_native_id())
        with contextlib.ExitStack() as stack:
            for profile in profiles:
                stack.enter_context(profile)  # enable(), then disable() on the way out
            run(self)

    StreamSession.run = wrapper  # type: ignore[method-assign]


def schedstat(thread: int) -> tuple[float, float]:
    """Seconds a thread of this process has run on a CPU, and waited for one (Linux; NaN elsewhere)."""
    try:
        on_cpu, waiting = Path(f"/proc/self/task/{thread}/schedstat").read_text().split()[:2]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=StreamOptions.batch_size)
    parser.add_argument("--warmup", type=int, default=2_000, help="records of a warm-up stream first; 0: none")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    parser.add_argument("--runs", type=int, default=3, help="model-only runs; the best counts (default 3)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--profile", type=Path, metavar="PATH", help="cProfile the engine thread into PATH")
    args = parser.parse_args(argv)
    before = machine()  # the load average before this run
    payloads = tweet_records(args.records)
    model_rate, score_rate, labels = model_rates(payloads, args.batch_size, args.runs)
    with kafka() as info:
        threads: list[int] = []
        profiles: list[cProfile.Profile] = []
        instrument(threads, profiles)
        if args.warmup:
            stream(info, payloads[:args.warmup], args.partitions, args.batch_size, args.timeout, threads)
        profiles += [cProfile.Profile()] if args.profile else []
        run = stream(info, payloads, args.partitions, args.batch_size, args.timeout, threads)
    predictions = run.pop("predictions")
    mismatched = sum(predictions.get(str(i).encode(), label) != label for i, label in enumerate(labels))
    first = run["first_output_seconds"]
    figures = {**run, "records": args.records, "partitions": args.partitions, "batch_size": args.batch_size,
               "warmup": args.warmup, "runs": args.runs, "end_to_end_per_s": args.records / run["seconds"],
               "steady_per_s": (args.records - run["first_output_records"]) / (run["seconds"] - first),
               "model_only_per_s": model_rate, "score_batch_per_s": score_rate,
               "ratio": args.records / run["seconds"] / model_rate, "target_ratio": TARGET_RATIO,
               "prediction_mismatches": mismatched, "kafka": info.version, "machine": before}
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    for profile in profiles:
        profile.dump_stats(args.profile)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    return 0


def report(f: dict[str, Any]) -> str:
    verdict = "met" if f["ratio"] >= f["target_ratio"] else "MISSED"
    scoring = f["scoring_seconds"] or 0.0
    return "\n".join([
        f"{f['records']:,} records, {f['partitions']} partition(s), batch size {f['batch_size']}, "
        f"Kafka {f['kafka']}, after a warm-up stream of {f['warmup']:,}",
        f"{'end to end':<24}{f['end_to_end_per_s']:>10,.0f} records/s  ({f['seconds']:.2f} s from engine.start "
        "until a read_committed reader has all)",
        f"{'  RUNNING after':<24}{f['running_seconds']:>10.2f} s  (connected: topics checked, init_transactions, "
        "partitions assigned)",
        f"{'  first output after':<24}{f['first_output_seconds']:>10.2f} s  (+ fetch, batch, commit)",
        f"{'  from then on':<24}{f['steady_per_s']:>10,.0f} records/s",
        f"{'model only':<24}{f['model_only_per_s']:>10,.0f} records/s  (predict, batches of {f['batch_size']}, "
        f"best of {f['runs']})",
        f"{'score_batch only':<24}{f['score_batch_per_s']:>10,.0f} records/s  (parse + predict + serialize)",
        f"{'end to end / model':<24}{f['ratio']:>10.2f}   target >= {f['target_ratio']}: {verdict}",
        f"{'engine scoring time':<24}{scoring:>10.2f} s of {f['seconds']:.2f} s ({scoring / f['seconds']:.0%}) "
        f"in {int(f['batches'] or 0)} batches: {f['records'] / scoring if scoring else 0:,.0f} records/s then",
        f"{'engine thread':<24}{f['engine_on_cpu_seconds']:>10.2f} s on a CPU, "
        f"{f['engine_waiting_for_cpu_seconds']:.2f} s waiting for one (other work on the machine, the broker), "
        f"{f['seconds'] - f['engine_on_cpu_seconds'] - f['engine_waiting_for_cpu_seconds']:.2f} s blocked "
        "(Kafka round trips, GIL)",
        f"{'duplicates':<24}{f['duplicates']:>10}   missing {f['missing']}, unexpected keys {f['unexpected']}",
        f"{'errored records':<24}{f['records_errored']:>10}   prediction mismatches (output vs. model only) "
        f"{f['prediction_mismatches']}",
        f"machine: {describe(f['machine'])}",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
