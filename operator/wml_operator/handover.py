"""Re-creating a deployment without losing, repeating or tearing down anything: the hand-over, as pure decisions.

A re-create (a credentials rotation, a new model, topic or endpoint) replaces the `previous` deployment by a
`current` one built from the new spec, in steps that each leave WML in a state the next pass can pick up
from, whatever was killed in between:

    CHECK   the new deployment is creatable (model, topics, credentials): else Stalled, the old stream runs on
    DRAIN   the previous deployment is stopped: its last batch commits and its position is final
    SWITCH  the new deployment is created, starting from that position (when it means anything there)
    RETIRE  the previous deployment is deleted, where it lives

Two streams never run for one resource: the new one is created only once the previous one is STOPPED, and
the previous one is deleted only once the new one exists. Nothing in this module does I/O:
tests/unit/test_handover_steps.py holds the tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from wml_api.models import EXT_DRY_RUN, EXT_INITIAL_STATUS, EXT_POSITION, EXT_STARTING_OFFSETS, Deployment
from wml_operator.plan import RUNNING, STOPPED

NOT_HANDED_OVER = "position not handed over"


class Step(StrEnum):
    CHECK = "check"
    DRAIN = "drain"
    SWITCH = "switch"
    RETIRE = "retire"
    RESTORE = "restore"  # the new one cannot be made: the previous one goes back to the declared state
    WAIT = "wait"  # the previous one is still stopping


@dataclass(frozen=True)
class Previous:
    """The deployment being replaced, as WML shows it."""

    deployment_id: str
    status: str
    model_id: str | None
    topic: str | None  # its input topic
    brokers: frozenset[str]  # its input brokers
    position: Mapping[str, int] | None  # the next offset per partition, as the server reports it
    position_topic: str | None

    @classmethod
    def of(cls, deployment: Deployment) -> Previous:
        entity = deployment.entity
        source = entity.input.source if entity.input else None
        brokers = frozenset(entity.input.connection.kafka_brokers_sasl) if entity.input else frozenset()
        details = entity.status_details
        position = details.position if details is not None else None
        return cls(deployment.id, deployment.status, deployment.model_id, source.topic if source else None, brokers,
                   dict(position.offsets) if position is not None else None,
                   position.topic if position is not None else None)


def next_step(declared: str, previous: Previous, current_exists: bool, checked: bool) -> Step:
    """The next step of a hand-over from `previous`: `current_exists` when the new deployment is made already
    (a pass was killed before it retired the previous one), `checked` once this pass has run CHECK."""
    if current_exists:
        return Step.RETIRE
    if not checked:
        return Step.CHECK
    if previous.status != STOPPED:
        return Step.DRAIN
    return Step.SWITCH


def after_drain(status: str) -> Step:
    """WML's answer to the stop: a stream that is still finishing its last batch is waited for."""
    return Step.SWITCH if status == STOPPED else Step.WAIT


def restore_to(declared: str, previous: Previous) -> str | None:
    """The new deployment cannot be made: what the previous one is set to, so that a stream declared RUNNING
    keeps running (None: leave it as it is)."""
    if declared == RUNNING and previous.status == STOPPED:
        return RUNNING
    return None


@dataclass(frozen=True)
class Start:
    """Where the new deployment starts, the sentence that says so (status.handOver) and the event it is worth
    (`reason`, a warning when a position a user may count on was not handed over)."""

    position: dict[str, int] | None
    note: str
    reason: str | None = None
    warning: bool = False

    @property
    def handed_over(self) -> bool:
        return self.position is not None


def start_of(previous: Previous | None, *, topic: str, brokers: frozenset[str], starting_offsets: str,
             keep_across_topics: bool, old_extensions: frozenset[str], new_extensions: frozenset[str]) -> Start:
    """Where a new deployment starts reading: the previous one's position when it means the same records
    there (same brokers, same topic or keepPositionOnTopicChange) and both servers carry it; else where
    spec.input.startingOffsets says, with the reason."""
    supported = EXT_STARTING_OFFSETS in new_extensions
    where = f"starting at the {starting_offsets} offsets"
    if not supported and starting_offsets != "earliest":
        where = "starting at the earliest offsets: the server does not support startingOffsets"
    if previous is None:
        if not supported and starting_offsets != "earliest":
            return Start(None, where[0].upper() + where[1:], "StartingOffsetsUnsupported", warning=True)
        return Start(None, where[0].upper() + where[1:])

    def without(why: str) -> Start:
        return Start(None, f"{NOT_HANDED_OVER}: {why}; {where}", "PositionNotHandedOver", warning=True)

    if not supported:
        return without("the server does not support it")
    if EXT_POSITION not in old_extensions:
        return without(f"the server of deployment {previous.deployment_id} does not report its position")
    if previous.brokers and not previous.brokers & brokers:
        return Start(None, f"the input is on other Kafka brokers: {where}", "InputMoved")
    if previous.topic is not None and previous.topic != topic and not keep_across_topics:
        return Start(None, f"the input topic changed from {previous.topic} to {topic}: {where} "
                           f"(keepPositionOnTopicChange keeps the position)", "TopicChanged")
    if previous.position is None:
        return without(f"deployment {previous.deployment_id} reports no position")
    offsets = {p: int(o) for p, o in sorted(previous.position.items(), key=lambda kv: int(kv[0]))}
    shown = ", ".join(f"{p}:{o}" for p, o in offsets.items()) or "none consumed"
    return Start(offsets, f"handed over from deployment {previous.deployment_id} at offsets {shown}", "HandedOver")


def can_check(extensions: frozenset[str]) -> bool:
    """The server checks a whole create (topics and Kafka credentials too) without making it."""
    return EXT_DRY_RUN in extensions


def created_stopped(declared: str, extensions: frozenset[str]) -> bool:
    """A deployment declared STOPPED is created stopped, where the server can."""
    return declared == STOPPED and EXT_INITIAL_STATUS in extensions
