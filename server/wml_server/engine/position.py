"""Where a stream starts reading and where it stands: the extensions `starting_offsets` and `position`.

At connect, each input partition starts at the group's committed offset when it has one (a restart resumes
where the last transaction left it); else at the handed-over `start_position` of a deployment this one
replaces; else per `starting_offsets` (earliest, or the high watermark at that moment for latest). The
offsets are assigned explicitly, and a partition that had no committed offset gets the resolved one committed
at once: a restart before the first transaction must not resolve "latest" again and skip what came meanwhile.

While the stream runs, `StreamProgress` holds the next offset to read per partition (advanced by each
committed transaction) and the lag last measured; the API renders both without asking Kafka.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from wml_server.engine.clients import ConsumerLike, consumer_config
from wml_server.engine.failures import redact
from wml_server.engine.spec import StartOptions, StreamSpec

log = logging.getLogger(__name__)


def resolve_start(partition: int, committed: int | None, watermarks: tuple[int, int],
                  options: StartOptions) -> int:
    """The offset a partition starts at. `committed`: the group's (None when it has none); `watermarks`:
    (low, high) of the partition now."""
    if committed is not None and committed >= 0:
        return committed
    handed = (options.start_position or {}).get(str(partition))
    if handed is not None:
        return handed
    low, high = watermarks
    return high if options.starting_offsets == "latest" else low


class StreamProgress:
    """Per deployment, across its runs in this process: the position in its input topic and the lag."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._topic: str | None = None
        self._offsets: dict[int, int] = {}
        self._lag: int | None = None

    def begin(self, topic: str, offsets: Mapping[int, int], lag: int | None) -> None:
        with self._lock:
            self._topic, self._offsets, self._lag = topic, dict(offsets), lag

    def advance(self, offsets: Mapping[int, int]) -> None:
        """A transaction committed these next offsets (only partitions it carried records of)."""
        with self._lock:
            self._offsets.update(offsets)

    def set_lag(self, lag: int) -> None:
        with self._lock:
            self._lag = lag

    def position(self) -> tuple[str, dict[str, int]] | None:
        """(topic, {"0": next offset, ...}), or None before the first connect."""
        with self._lock:
            if self._topic is None:
                return None
            return self._topic, {str(p): o for p, o in sorted(self._offsets.items())}

    @property
    def lag(self) -> int | None:
        with self._lock:
            return self._lag


def start_offsets(consumer: ConsumerLike, topic: str, partitions: list[int], options: StartOptions,
                  timeout: float) -> tuple[dict[int, int], list[TopicPartition], int]:
    """Resolves every partition's start: (start per partition, the offsets to commit now because the group
    had none there, the lag at that moment). Raises KafkaException (the caller retries or fails)."""
    known = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout)
    committed = {tp.partition: tp.offset for tp in known if tp.offset >= 0}
    starts: dict[int, int] = {}
    lag = 0
    for partition in partitions:
        marks = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout)
        if marks is None:  # not answered in time: the caller tries again
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "no watermarks in time"))
        low, high = marks
        starts[partition] = resolve_start(partition, committed.get(partition), (low, high), options)
        lag += max(0, high - starts[partition])
    fresh = [TopicPartition(topic, p, starts[p]) for p in partitions if p not in committed]
    return starts, fresh, lag


def lag_of(consumer: ConsumerLike) -> int | None:
    """Records behind the end of the input topic, from the end offsets the last fetch responses carried
    (read_committed: the last stable offset). Asking the broker instead would queue behind the consumer's
    long-polling fetch on the same connection and stall the stream for up to a second each time."""
    total = 0
    try:
        for tp in consumer.position(consumer.assignment()):
            marks = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
            if tp.offset < 0 or marks is None or marks[1] < 0:
                continue  # nothing fetched or consumed there yet
            total += max(0, marks[1] - tp.offset)
    except KafkaException:
        return None
    return total


def committed_position(spec: StreamSpec, timeout: float = 10.0) -> dict[str, int] | None:
    """The group's committed offsets on the input brokers ({"0": next offset, ...}): the position of a
    deployment that has not run in this process (a restart cut its stop short, or it failed before it
    connected), whose stored position may be older than its last transaction. None when the brokers do not
    answer in time. Joins no group: it only reads the offsets."""
    consumer = Consumer({**consumer_config(spec, lambda _err: None), "client.id": f"wml-{spec.deployment_id}-pos"})
    try:
        metadata = consumer.list_topics(spec.input.topic, timeout)
        topic = metadata.topics.get(spec.input.topic)
        if topic is None or topic.error is not None:
            return None
        known = consumer.committed([TopicPartition(spec.input.topic, p) for p in sorted(topic.partitions)],
                                   timeout)
    except KafkaException as exc:
        log.warning("deployment %s: its committed offsets could not be read: %s", spec.deployment_id,
                    redact(str(exc), spec.secrets()))
        return None
    finally:
        consumer.close()
    return {str(tp.partition): tp.offset for tp in known if tp.offset >= 0}
