"""The latency run of bench/stream_throughput.py: input to output at a fixed rate, per record.

A producer child process sends records at a fixed rate, each with its send time (`sent`, time.monotonic():
CLOCK_MONOTONIC on Linux, one clock for every process of the machine); a read_committed reader child
process notes when each scored record arrives (poll() returns as soon as one is there) and keeps arrival
minus send time. The engine runs in this process, started (and RUNNING) before the first record is sent.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import queue
import time
import uuid
from collections import Counter
from collections.abc import Callable
from multiprocessing.synchronize import Event
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from _kafka import topic_admin
from _stream_run import endpoint_of
from wml_localplatform.kafka import KafkaInfo
from wml_server.engine import RUNNING, Engine, KafkaTopic, StreamOptions, StreamSpec
from wml_server.models.sentiment import SentimentModel

QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "max": 1.0}


def send_at_rate(config: dict[str, Any], topic: str, texts: list[str], rate: float, count: int,
                 out: queue.Queue[Any]) -> None:
    """Child process: `count` records {"tweet", "id", "sent"} at `rate` per second, keyed by id, each sent
    at its due time (start + i / rate) or as soon as possible after it."""
    # linger.ms 5, librdkafka's default (and the Java client's since Kafka 4.0). At 1 ms nearly every record went
    # out in a request of its own, and this sender took 5.9 CPU-seconds of a 15 s run (3.5 at 5 ms) from the cores
    # the stream shares. A record's wait in the producer counts in its latency either way (`sent` is taken before).
    producer = Producer({**config, "linger.ms": 5, "enable.idempotence": True, "log_level": 3})
    behind = 0.0  # the most a record was sent after its due time
    start = time.monotonic() + 0.1
    for i in range(count):
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            behind = max(behind, now - due)
        value = json.dumps({"tweet": texts[i % len(texts)], "id": i, "sent": time.monotonic()}).encode()
        producer.produce(topic, value, str(i).encode())
        producer.poll(0)
    sent_seconds = time.monotonic() - start
    unsent = producer.flush(60)
    out.put(("sent", {"records": count - unsent, "seconds": sent_seconds, "max_behind_schedule_s": behind}))


def read_latencies(config: dict[str, Any], topic: str, count: int, out: queue.Queue[Any], stop: Event,
                   start_offset: int = OFFSET_BEGINNING) -> None:
    """Child process: arrival minus send time of each output record, read_committed, until all `count` keys
    are in (or `stop`); from `start_offset` (OFFSET_END: past a warm-up's records)."""
    reader = Consumer({**config, "isolation.level": "read_committed", "enable.auto.commit": False})
    reader.assign([TopicPartition(topic, 0, start_offset)])
    reader.consume(1, 1.0)  # connected before the first record is sent
    out.put(("ready", None))
    latencies: list[float] = []
    keys: Counter[bytes] = Counter()
    while len(keys) < count and not stop.is_set():
        message = reader.poll(0.1)
        arrived = time.monotonic()
        if message is None or message.error() is not None:
            continue
        keys[message.key() or b""] += 1
        if keys[message.key() or b""] == 1:
            latencies.append(arrived - json.loads(message.value() or b"{}")["sent"])
    reader.close()
    out.put(("result", {"latencies": latencies, "duplicates": sum(keys.values()) - len(keys),
                        "missing": count - len(keys)}))


def measure(reader: Any, sender: Any, out: queue.Queue[Any], stop: Event, events: dict[str, Any], limit: float,
            check: Callable[[], None] = lambda: None) -> None:
    """Starts the reader child, then (once it reads) the sender; collects their reports into `events` until the
    reader's `result` (or `limit` s), then stops both and waits for `result` and `sent`. `check` runs between
    reports (raising ends the run: a stream that failed)."""
    reader.start()
    events.update([out.get(timeout=60)])
    time.sleep(1.0)  # the consumer has its partition and is fetching
    sender.start()
    deadline = time.monotonic() + limit
    while "result" not in events and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            events.update([out.get(timeout=0.5)])
        check()
    stop.set()
    while "result" not in events or "sent" not in events:
        events.update([out.get(timeout=60)])


def quantile(ordered: list[float], q: float) -> float:
    """The nearest-rank quantile of sorted values."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def latency(info: KafkaInfo, texts: list[str], options: StreamOptions, rate: float, seconds: float,
            timeout: float) -> dict[str, Any]:
    """One deployment on a fresh 1-partition topic fed at `rate` records/s for `seconds`; latency figures."""
    count = int(rate * seconds)
    run_id = uuid.uuid4().hex[:8]
    topics = (f"bench-latency-in-{run_id}", f"bench-latency-out-{run_id}")
    topic_admin(info, "create", topics, 1)
    endpoint = endpoint_of(info)
    spec = StreamSpec(f"bench-latency-{run_id}", SentimentModel(), KafkaTopic(topics[0], endpoint),
                      KafkaTopic(topics[1], endpoint))
    engine = Engine(options=options)
    context = multiprocessing.get_context("spawn")
    out: queue.Queue[Any] = context.Queue()  # type: ignore[assignment]
    stop = context.Event()
    base = info.client_config()
    reader = context.Process(target=read_latencies, daemon=True,
                             args=({**base, "group.id": f"bench-latency-{run_id}"}, topics[1], count, out, stop))
    sender = context.Process(target=send_at_rate, args=(base, topics[0], texts, rate, count, out), daemon=True)
    events: dict[str, Any] = {}
    try:
        engine.start(spec)
        state = engine.wait_for(spec.deployment_id, [RUNNING], timeout=60)
        if state is None or state.status != RUNNING:
            raise RuntimeError(f"the stream did not start: {state}")
        measure(reader, sender, out, stop, events, seconds + timeout)
    finally:
        engine.shutdown()
        stop.set()
        for child in (sender, reader):
            if child.pid is not None:
                child.join(30)
            if child.is_alive():
                child.terminate()  # our own child, by its handle
        topic_admin(info, "delete", topics)
    result, sent = events["result"], events["sent"]
    ordered = sorted(result["latencies"])
    return {
        "rate_per_s": rate, "seconds": seconds, "records": count, "records_sent": sent["records"],
        "send_rate_per_s": sent["records"] / sent["seconds"] if sent["seconds"] else float("nan"),
        "max_behind_schedule_ms": sent["max_behind_schedule_s"] * 1000,
        "records_measured": len(ordered), "duplicates": result["duplicates"], "missing": result["missing"],
        **{f"{name}_ms": quantile(ordered, q) * 1000 for name, q in QUANTILES.items()},
        "mean_ms": sum(ordered) / len(ordered) * 1000 if ordered else float("nan"),
        "batches": engine.registry.get_sample_value("wml_stream_batch_records_count"),
    }

