"""Our Kafka sink for Spark: each micro-batch's output, exactly once, although Spark replays batches.

Runs in Spark's Python workers (mapInPandas over a batch whose Spark partitions are the Kafka source's: one input
partition per task). For each input partition of a batch, one Kafka transaction carries:
- the partition's output records (and error records, to the dead-letter topic when there is one), and
- the input offset after its last record, committed to the deployment's consumer group (`wml-<deployment id>`,
  as the built-in engine does).

So the group's committed offset records which input records have gone out. A replayed batch (after a driver,
an executor or the master died, or the broker restarted) writes only its records at or past that offset: none
when the first run committed. The transactional id (`wml-<deployment id>-p<partition>`) fences a zombie writer of
the same partition: its transaction is aborted when the next writer initialises, and it can commit nothing.
The group's offsets are also the deployment's position for a hand-over and where a driver without a checkpoint
starts (driver.py), so both engines agree on where a deployment is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from wml_server.engine.failures import redact
from wml_server.engine.session import HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC

if TYPE_CHECKING:
    import pandas as pd

SINK_TIMEOUT = 60.0
RESULT_SCHEMA = "partition int, records long, errored long, written long, next_offset long"
# Written into a Python worker's exception, and found again by the driver in the query's exception.
FAILURE_MARK = "wml-sink-failure"


class SinkFailure(RuntimeError):
    """Why a partition's output could not be committed; the message is redacted."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{FAILURE_MARK}[{code}]: {message}")
        self.code = code


def transactional_id(deployment_id: str, partition: int) -> str:
    return f"wml-{deployment_id}-p{partition}"


def write_frames(config: dict[str, Any], frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas: frames with columns partition, offset, key, value, failed (scored); yields one row of
    RESULT_SCHEMA per input partition written."""
    import pandas as pd

    parts = [f for f in frames if len(f)]
    if not parts:
        return
    batch = pd.concat(parts, ignore_index=True)
    for partition, rows in batch.groupby("partition", sort=True):
        yield pd.DataFrame([write_partition(config, int(partition), rows.sort_values("offset"))])


class _Writer:
    """One input partition's transactional producer and the group's position, kept by a Spark Python worker from
    batch to batch: initialising a transactional producer and reading the group's offset cost round trips to the
    broker that every batch paid otherwise. `committed` stays right while the producer is not fenced: a writer of
    the same partition elsewhere (another Python worker, a new driver's executors) must initialise its own first,
    which fences this one, and a fenced producer can commit nothing (write() then starts over, fresh)."""

    def __init__(self, config: dict[str, Any], partition: int) -> None:
        self.partition = partition
        self.topic = config["input_topic"]
        deployment = config["deployment_id"]
        self.broken = False
        self.producer = Producer({**config["out_kafka"], "transactional.id": transactional_id(deployment, partition),
                                  "client.id": f"wml-{deployment}-spark-p{partition}", "error_cb": self._on_error,
                                  "enable.idempotence": True, "transaction.timeout.ms": 120_000, "linger.ms": 5,
                                  "delivery.report.only.error": True, "retry.backoff.ms": 20,
                                  "retry.backoff.max.ms": 200})
        self.consumer = Consumer({**config["in_kafka"], "group.id": config["group_id"],
                                  "client.id": f"wml-{deployment}-spark-pos", "enable.auto.commit": False,
                                  "isolation.level": "read_committed"})
        self.failed: list[KafkaError] = []
        try:
            # Fences the last writer of this partition (its open transaction is aborted), then reads its position.
            self.producer.init_transactions(SINK_TIMEOUT)
            (done,) = self.consumer.committed([TopicPartition(self.topic, partition)], SINK_TIMEOUT)
        except BaseException:
            self.close()
            raise
        self.committed = done.offset if done.offset >= 0 else -1

    def _on_error(self, err: KafkaError) -> None:
        # A producer that lost its brokers may keep a coordinator that is gone for good and then wait on it past
        # any timeout (librdkafka #5511): such a writer is not used for another batch.
        if err.fatal() or err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
            self.broken = True

    def _report(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self.failed.append(err)

    def write(self, config: dict[str, Any], rows: pd.DataFrame) -> dict[str, int]:
        topic, partition, committed = self.topic, self.partition, self.committed
        todo = rows[rows["offset"] >= committed] if committed >= 0 else rows
        result = {"partition": partition, "records": len(rows), "errored": int(todo["failed"].sum()),
                  "written": len(todo), "next_offset": max(committed, int(rows["offset"].max()) + 1)}
        if todo.empty:
            return result  # a replayed batch whose transaction had committed
        self.failed.clear()
        self.producer.begin_transaction()
        output, dead_letter = config["output_topic"], config["dead_letter_topic"]
        for key, value, bad, offset in zip(todo["key"], todo["value"], todo["failed"], todo["offset"], strict=True):
            # As on the built-in engine: a dead-lettered record names where its input was, to be found again.
            headers = [(HEADER_SOURCE_TOPIC, topic.encode()), (HEADER_SOURCE_PARTITION, str(partition).encode()),
                       (HEADER_SOURCE_OFFSET, str(int(offset)).encode())] if bad and dead_letter else None
            target = dead_letter if bad and dead_letter else output
            while True:
                try:
                    self.producer.produce(target, value=value, key=key, headers=headers, on_delivery=self._report)
                    break
                except BufferError:
                    self.producer.poll(0.05)
        offsets = [TopicPartition(topic, partition, result["next_offset"])]
        metadata = self.consumer.consumer_group_metadata()
        _bounded("sending the offsets to the transaction",
                 lambda: self.producer.send_offsets_to_transaction(offsets, metadata, SINK_TIMEOUT))
        _bounded("committing the transaction", lambda: self.producer.commit_transaction(SINK_TIMEOUT))
        if self.failed:  # a delivery failed although the commit did not raise: never count such a batch as written
            raise KafkaException(self.failed[0])
        self.committed = result["next_offset"]
        return result

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(0)


class _Stuck(Exception):
    """A librdkafka call that did not return within its own timeout (librdkafka #5456: a coordinator request's
    timeout is never checked). Its thread is left behind, blocked, with the writer it holds."""


def _bounded(what: str, call: Callable[[], object], timeout: float = SINK_TIMEOUT + 15) -> None:
    done = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="wml-sink-call", daemon=True).start()
    if not done.wait(timeout):
        raise _Stuck(f"{what} did not return within {timeout:g} s")
    if raised:
        raise raised[0]


# This Python worker's writers, by transactional id (Spark reuses its Python workers across tasks and batches).
_WRITERS: dict[str, _Writer] = {}


def _fenced(err: KafkaError | None) -> bool:
    return err is not None and (err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                                              KafkaError.INVALID_PRODUCER_EPOCH))


def write_partition(config: dict[str, Any], partition: int, rows: pd.DataFrame) -> dict[str, int]:
    key = transactional_id(config["deployment_id"], partition)
    if (old := _WRITERS.get(key)) is not None and old.broken:
        _WRITERS.pop(key).close()
    for attempt in (1, 2):
        writer = _WRITERS.get(key)
        kept = writer is not None
        try:
            if writer is None:
                writer = _WRITERS[key] = _Writer(config, partition)
            return writer.write(config, rows)
        except _Stuck as stuck:
            _WRITERS.pop(key, None)  # not closed: its blocked call still holds it; the next writer fences it
            raise SinkFailure("kafka_transaction_failed", f"partition {partition} of `{config['input_topic']}`: "
                                                          f"{stuck}") from None
        except KafkaException as exc:
            if (stale := _WRITERS.pop(key, None)) is not None:
                stale.close()  # its open transaction, if any, is aborted by the next writer's initialisation
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if kept and attempt == 1 and _fenced(err):
                continue  # another writer of this partition came since: start over with a fresh one
            code = "kafka_producer_fenced" if _fenced(err) else "kafka_transaction_failed"
            raise SinkFailure(code, f"partition {partition} of `{config['input_topic']}`: "
                                    f"{redact(err.str() if err else str(exc), config['secrets'])}") from None
        except BaseException:
            if (stale := _WRITERS.pop(key, None)) is not None:
                stale.close()  # never keep a writer whose transaction may be open
            raise
    raise AssertionError("unreachable")  # the loop returns or raises
