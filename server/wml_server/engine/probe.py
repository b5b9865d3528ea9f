"""The Kafka part of a dry run (extension EXT_DRY_RUN): would a stream of this spec connect?

Checks each side's connection with a short-lived plain producer: the brokers answer, accept the SASL
credentials, and know the topic (metadata only: never auto-created, nothing produced). Bounded: each side gets
`timeout` seconds. Raises the StreamFailure the stream itself would have FAILED with (same codes, same
messages, no secret).
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, KafkaException, Producer

from wml_server.engine import failures
from wml_server.engine.clients import ErrorInbox, LibrdkafkaLog
from wml_server.engine.connection import DEAD_LETTER, INPUT, OUTPUT, UNKNOWN_TOPIC_CODES, error_of
from wml_server.engine.spec import KafkaTopic, StreamSpec

_AUTH_CODES = (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)


def check_topic(role: str, ref: KafkaTopic, timeout: float) -> None:
    """Returns once the brokers of `ref` accepted the credentials and named the topic; raises StreamFailure."""
    secrets = ref.connection.secrets()
    inbox = ErrorInbox()
    try:
        client = Producer({**ref.connection.to_librdkafka(), "client.id": f"wml-dry-run-{role}",
                           "error_cb": inbox, "logger": LibrdkafkaLog(secrets),
                           "allow.auto.create.topics": False, "reconnect.backoff.max.ms": 1000})
    except (KafkaException, ValueError, TypeError) as exc:
        raise failures.configuration_invalid(role, ref, str(exc), secrets) from None
    deadline = time.monotonic() + timeout
    last = ""
    try:
        while True:
            metadata = None
            try:
                metadata = client.list_topics(topic=ref.topic, timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            except KafkaException as exc:
                last = error_of(exc).str()
            client.poll(0)  # serves error_cb
            for err in inbox.take():
                if err.code() in _AUTH_CODES:
                    raise failures.authentication_failed(role, ref, err.str(), secrets)
                last = err.str()
            if metadata is not None:
                topic = metadata.topics.get(ref.topic)
                err = topic.error if topic is not None else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
                if err is None and topic is not None and topic.partitions:
                    return
                if err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    raise failures.authorization_failed(role, ref, f"use the topic '{ref.topic}'", secrets)
                if err is not None and err.code() in UNKNOWN_TOPIC_CODES:
                    raise failures.unknown_topic(role, ref)
                last = err.str() if err is not None else last
            if time.monotonic() >= deadline:
                raise failures.unreachable(role, ref, timeout, last, secrets)
    finally:
        client.flush(0)


def check_stream(spec: StreamSpec, timeout: float = 5.0) -> list[str]:
    """Both connections of a stream, input first, then the dead-letter topic (on the output's connection) when
    there is one; what was checked, for the dry run's report."""
    check_topic(INPUT, spec.input, timeout)
    check_topic(OUTPUT, spec.output, timeout)
    checked = [f"kafka {INPUT}: credentials accepted, topic '{spec.input.topic}' exists",
               f"kafka {OUTPUT}: credentials accepted, topic '{spec.output.topic}' exists"]
    if spec.dead_letter is not None:
        check_topic(DEAD_LETTER, spec.dead_letter, timeout)
        checked.append(f"kafka {DEAD_LETTER}: topic '{spec.dead_letter.topic}' exists")
    return checked
