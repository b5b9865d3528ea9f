"""Why a stream cannot run, in words a user can act on, with every secret taken out."""

from __future__ import annotations

import re
from collections.abc import Sequence

from wml_server.engine import state
from wml_server.engine.spec import KafkaTopic

REDACTED = "***"

# librdkafka may quote configuration values in its own messages; never let a sasl.password through.
_PASSWORD_PROPERTY = re.compile(r"(sasl\.password|password|api_key)\s*[=:]\s*\S+", re.IGNORECASE)


class StreamFailure(Exception):
    """The stream cannot go on: becomes status FAILED with (code, message). The message is already redacted."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret (longest first) and every `password=...` replaced by ***."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return _PASSWORD_PROPERTY.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


def _where(role: str, ref: KafkaTopic) -> str:
    # The dead-letter topic (connection.DEAD_LETTER) lives on the output's connection.
    side = "output" if role == "dead-letter" else role
    return f"the {side} connection (brokers {', '.join(ref.connection.brokers)})"


def authentication_failed(role: str, ref: KafkaTopic, detail: str, secrets: Sequence[str]) -> StreamFailure:
    return StreamFailure(
        state.KAFKA_AUTHENTICATION_FAILED,
        f"Kafka refused the credentials of {_where(role, ref)}: check its user and password (or api_key). "
        f"Broker said: {redact(detail, secrets)}")


def authorization_failed(role: str, ref: KafkaTopic, what: str, secrets: Sequence[str]) -> StreamFailure:
    return StreamFailure(
        state.KAFKA_AUTHORIZATION_FAILED,
        f"The user of {_where(role, ref)} is not allowed to {redact(what, secrets)}.")


def unknown_topic(role: str, ref: KafkaTopic) -> StreamFailure:
    return StreamFailure(
        state.KAFKA_UNKNOWN_TOPIC,
        f"The {role} topic '{ref.topic}' does not exist on {_where(role, ref)}; create it first "
        f"(this service never creates topics).")


def unreachable(role: str, ref: KafkaTopic, seconds: float, detail: str, secrets: Sequence[str]) -> StreamFailure:
    tail = f" Last error: {redact(detail, secrets)}" if detail else ""
    return StreamFailure(
        state.KAFKA_UNREACHABLE,
        f"No Kafka broker of {_where(role, ref)} could be reached for {seconds:g} s.{tail}")


def fenced(ref: KafkaTopic) -> StreamFailure:
    return StreamFailure(
        state.KAFKA_PRODUCER_FENCED,
        f"Another runner of this deployment took over its transactional producer on {_where('output', ref)}; "
        "this one stopped so that no record is written twice.")


def configuration_invalid(role: str, ref: KafkaTopic, detail: str, secrets: Sequence[str]) -> StreamFailure:
    return StreamFailure(
        state.KAFKA_CONFIGURATION_INVALID,
        f"The Kafka client for {_where(role, ref)} could not be configured: {redact(detail, secrets)}")
