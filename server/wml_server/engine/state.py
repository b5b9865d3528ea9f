"""The status of a stream deployment as the engine reports it (the v3 API's `entity.status`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

# wml_api.DeploymentStatus names these; the engine keeps copies because it imports nothing of the API side
# (no pydantic, no wml_api): it runs as a process of its own (`python -m wml_server.engine`, and the worker
# processes to come) that must start light. tests/unit/test_engine_spec.py holds the copies equal.
INITIALIZING: Final = "INITIALIZING"
RUNNING: Final = "RUNNING"
STOPPED: Final = "STOPPED"
FAILED: Final = "FAILED"

# Failure codes (entity.status_details.failure.errors[].code).
KAFKA_AUTHENTICATION_FAILED: Final = "kafka_authentication_failed"
KAFKA_AUTHORIZATION_FAILED: Final = "kafka_authorization_failed"
KAFKA_UNKNOWN_TOPIC: Final = "kafka_unknown_topic"
KAFKA_UNREACHABLE: Final = "kafka_unreachable"
KAFKA_PRODUCER_FENCED: Final = "kafka_producer_fenced"
KAFKA_CONFIGURATION_INVALID: Final = "kafka_configuration_invalid"
KAFKA_TRANSACTION_FAILED: Final = "kafka_transaction_failed"
KAFKA_ERROR: Final = "kafka_error"
SCORING_WORKER_FAILED: Final = "scoring_worker_failed"
INTERNAL_ERROR: Final = "internal_error"

Errors = list[tuple[str, str]]
"""(code, message) pairs; messages name the problem and never carry a secret."""

StatusCallback = Callable[[str, str, Errors], None]
"""on_status_change(deployment_id, status, errors): called on every change, from engine threads."""


@dataclass(frozen=True)
class StreamState:
    """A snapshot: status, why it FAILED, counts of records whose transaction committed, and (once the stream
    has connected in this process) its position in the input topic and its lag (engine/position.py)."""

    status: str
    errors: Errors = field(default_factory=list)
    records_in: int = 0
    records_out: int = 0
    records_errored: int = 0
    position: tuple[str, dict[str, int]] | None = None  # (input topic, {"0": next offset to read, ...})
    lag: int | None = None  # records behind the end of the input topic, as last measured


class StreamCounts:
    """Records of one deployment whose transaction committed, across its runs in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in = self._out = self._errored = 0

    def add(self, records: int, errored: int) -> None:
        with self._lock:
            self._in += records
            self._out += records
            self._errored += errored

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self._in, self._out, self._errored
