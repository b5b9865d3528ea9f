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

from collections.abc import Iterator
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


def write_partition(config: dict[str, Any], partition: int, rows: pd.DataFrame) -> dict[str, int]:
    secrets: list[str] = config["secrets"]
    topic = config["input_topic"]
    producer = Producer({**config["out_kafka"], "transactional.id": transactional_id(config["deployment_id"],
                                                                                     partition),
                         "client.id": f"wml-{config['deployment_id']}-spark-p{partition}",
                         "enable.idempotence": True, "transaction.timeout.ms": 120_000, "linger.ms": 5,
                         "delivery.report.only.error": True, "retry.backoff.ms": 20, "retry.backoff.max.ms": 200})
    consumer = Consumer({**config["in_kafka"], "group.id": config["group_id"],
                         "client.id": f"wml-{config['deployment_id']}-spark-pos",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    failed: list[KafkaError] = []
    try:
        # Fences the last writer of this partition (its open transaction is aborted) before its position is read.
        producer.init_transactions(SINK_TIMEOUT)
        (done,) = consumer.committed([TopicPartition(topic, partition)], SINK_TIMEOUT)
        committed = done.offset if done.offset >= 0 else -1
        todo = rows[rows["offset"] >= committed] if committed >= 0 else rows
        result = {"partition": partition, "records": len(rows), "errored": int(todo["failed"].sum()),
                  "written": len(todo), "next_offset": max(committed, int(rows["offset"].max()) + 1)}
        if todo.empty:
            return result  # a replayed batch whose transaction had committed
        producer.begin_transaction()
        output, dead_letter = config["output_topic"], config["dead_letter_topic"]

        def report(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                failed.append(err)

        for key, value, bad, offset in zip(todo["key"], todo["value"], todo["failed"], todo["offset"], strict=True):
            # As on the built-in engine: a dead-lettered record names where its input was, to be found again.
            headers = [(HEADER_SOURCE_TOPIC, topic.encode()), (HEADER_SOURCE_PARTITION, str(partition).encode()),
                       (HEADER_SOURCE_OFFSET, str(int(offset)).encode())] if bad and dead_letter else None
            target = dead_letter if bad and dead_letter else output
            while True:
                try:
                    producer.produce(target, value=value, key=key, headers=headers, on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.send_offsets_to_transaction([TopicPartition(topic, partition, result["next_offset"])],
                                             consumer.consumer_group_metadata(), SINK_TIMEOUT)
        producer.commit_transaction(SINK_TIMEOUT)
        if failed:  # a delivery failed although the commit did not raise: never count such a batch as written
            raise KafkaException(failed[0])
        return result
    except KafkaException as exc:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        code = "kafka_producer_fenced" if err is not None and err.code() == KafkaError._FENCED else \
            "kafka_transaction_failed"
        raise SinkFailure(code, f"partition {partition} of `{topic}`: "
                                f"{redact(err.str() if err else str(exc), secrets)}") from None
    finally:
        consumer.close()
        producer.flush(0)
