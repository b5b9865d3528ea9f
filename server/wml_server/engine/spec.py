"""What one stream deployment is, as the engine sees it: plain dataclasses, no pydantic, no FastAPI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from wml_server.models.base import Model
from wml_server.models.published import PublishedUserModel

SecurityProtocol = Literal["SASL_SSL", "SASL_PLAINTEXT"]
StartingOffsets = Literal["earliest", "latest"]

# wml_api.wire.MASK; copied for the reason given in engine/state.py (the engine imports nothing of wml_api),
# and held equal by tests/unit/test_engine_spec.py.
_MASK = "********"


@dataclass(frozen=True)
class KafkaEndpoint:
    """A Kafka cluster and the credentials to reach it (the v3 API's `connection`).

    Credentials: `user` and `password` when both are given. Otherwise, when `api_key` is given, the IBM
    Message Hub convention of 2017 applies: its service credentials carried one 48-character `api_key`,
    whose first 16 characters are the SASL username and the rest the SASL password. repr() masks both
    secrets, so an endpoint can be logged.
    """

    brokers: list[str]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    security_protocol: SecurityProtocol = "SASL_SSL"
    sasl_mechanism: str = "PLAIN"

    def __repr__(self) -> str:
        return (f"KafkaEndpoint(brokers={self.brokers!r}, user={self.user!r}, "
                f"password={_MASK if self.password else None!r}, api_key={_MASK if self.api_key else None!r}, "
                f"security_protocol={self.security_protocol!r}, sasl_mechanism={self.sasl_mechanism!r})")

    __str__ = __repr__

    def sasl_credentials(self) -> tuple[str | None, str | None]:
        """(username, password) as they go to the broker; see the class docstring for api_key."""
        if self.user and self.password:
            return self.user, self.password
        if self.api_key:
            return self.api_key[:16], self.api_key[16:]
        return self.user, self.password

    def secrets(self) -> list[str]:
        """Every string that must never appear in a message, including the halves of an api_key."""
        values = [self.password, self.api_key]
        if self.api_key:
            values += [self.api_key[:16], self.api_key[16:]]
        # Very short fragments would blank out ordinary words in messages; they are not worth hiding.
        return [v for v in values if v and len(v) >= 4]

    def to_librdkafka(self) -> dict[str, Any]:
        """The connection part of a confluent-kafka (librdkafka) client configuration."""
        config: dict[str, Any] = {
            "bootstrap.servers": ",".join(self.brokers),
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
        }
        username, password = self.sasl_credentials()
        if username is not None:
            config["sasl.username"] = username
        if password is not None:
            config["sasl.password"] = password
        return config


@dataclass(frozen=True)
class KafkaTopic:
    """A topic and the connection it lives on (the v3 API's `source` or `target` with its `connection`)."""

    topic: str
    connection: KafkaEndpoint


@dataclass(frozen=True)
class StartOptions:
    """Where a stream without committed offsets starts (KafkaSource's extension fields; see engine/position.py)."""

    starting_offsets: StartingOffsets = "earliest"
    start_position: Mapping[str, int] | None = None  # partition number as a string -> next offset to read


@dataclass(frozen=True)
class StreamSpec:
    """One stream deployment: read `input.topic`, score each record with `model`, write `output.topic`; with
    `dead_letter_topic` (KafkaTarget's extension), records that cannot be scored go there instead, on the output's
    connection and in the same transactions."""

    deployment_id: str
    model: Model | PublishedUserModel
    input: KafkaTopic
    output: KafkaTopic
    start: StartOptions = field(default_factory=StartOptions)
    dead_letter_topic: str | None = None

    @property
    def dead_letter(self) -> KafkaTopic | None:
        """The dead-letter topic on the output's brokers, with the output's credentials (None: none)."""
        return KafkaTopic(self.dead_letter_topic, self.output.connection) if self.dead_letter_topic else None

    @property
    def group_id(self) -> str:
        return f"wml-{self.deployment_id}"

    @property
    def transactional_id(self) -> str:
        # One transactional id per deployment: a new runner fences whatever its predecessor left open.
        return f"wml-{self.deployment_id}"

    def secrets(self) -> list[str]:
        """Every secret of both connections, longest first (so redaction never leaves half of one)."""
        return sorted({*self.input.connection.secrets(), *self.output.connection.secrets()}, key=len, reverse=True)
