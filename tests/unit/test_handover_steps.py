"""The hand-over's decisions as tables (wml_operator.handover): the next step, and where a new deployment
starts reading."""

from __future__ import annotations

import pytest

from wml_api.models import EXTENSIONS
from wml_operator.handover import Previous, Start, Step, after_drain, next_step, restore_to, start_of

ALL = frozenset(EXTENSIONS)
NONE: frozenset[str] = frozenset()


def prev(status: str = "RUNNING", topic: str = "in", brokers: tuple[str, ...] = ("b:9093",),
         position: dict[str, int] | None = None) -> Previous:
    return Previous("old", status, "m1", topic, frozenset(brokers), position if position is not None else {"0": 5},
                    topic)


@pytest.mark.parametrize(("previous", "current_exists", "checked", "step"), [
    (prev(), False, False, Step.CHECK),  # nothing is touched before the new one is known to be creatable
    (prev(), False, True, Step.DRAIN),
    (prev("INITIALIZING"), False, True, Step.DRAIN),
    (prev("FAILED"), False, True, Step.DRAIN),  # marked stopped, so that nothing restarts it meanwhile
    (prev("STOPPED"), False, True, Step.SWITCH),
    (prev("STOPPED"), True, False, Step.RETIRE),  # made by a pass that was killed: only the old one goes
    (prev("RUNNING"), True, False, Step.RETIRE),
])
def test_next_step(previous: Previous, current_exists: bool, checked: bool, step: Step) -> None:
    assert next_step("RUNNING", previous, current_exists, checked) == step


def test_a_stop_not_finished_is_waited_for() -> None:
    assert (after_drain("STOPPED"), after_drain("RUNNING")) == (Step.SWITCH, Step.WAIT)


@pytest.mark.parametrize(("declared", "status", "value"), [
    ("RUNNING", "STOPPED", "RUNNING"), ("RUNNING", "RUNNING", None), ("STOPPED", "STOPPED", None),
    ("RUNNING", "FAILED", None),
])
def test_restore(declared: str, status: str, value: str | None) -> None:
    assert restore_to(declared, prev(status)) == value


def start(previous: Previous | None, *, topic: str = "in", brokers: tuple[str, ...] = ("b:9093",),
          first: str = "earliest", keep: bool = False, old: frozenset[str] = ALL,
          new: frozenset[str] = ALL) -> Start:
    return start_of(previous, topic=topic, brokers=frozenset(brokers), starting_offsets=first,
                    keep_across_topics=keep, old_extensions=old, new_extensions=new)


@pytest.mark.parametrize(("got", "position", "reason", "warning", "says"), [
    (start(prev(position={"1": 9, "0": 5})), {"0": 5, "1": 9}, "HandedOver", False, "at offsets 0:5, 1:9"),
    (start(prev(position={})), {}, "HandedOver", False, "none consumed"),
    (start(prev(), brokers=("b:9093", "c:9093")), {"0": 5}, "HandedOver", False, "handed over"),
    (start(None), None, None, False, "Starting at the earliest offsets"),
    (start(None, first="latest"), None, None, False, "Starting at the latest offsets"),
    (start(None, first="latest", new=NONE), None, "StartingOffsetsUnsupported", True, "does not support"),
    (start(prev(), new=NONE), None, "PositionNotHandedOver", True, "the server does not support it"),
    (start(prev(), old=NONE), None, "PositionNotHandedOver", True, "does not report its position"),
    (start(Previous("old", "STOPPED", "m1", "in", frozenset({"b:9093"}), None, None)), None,
     "PositionNotHandedOver", True, "reports no position"),
    (start(prev(), topic="in2", first="latest"), None, "TopicChanged", False, "starting at the latest offsets"),
    (start(prev(), topic="in2", keep=True), {"0": 5}, "HandedOver", False, "handed over"),
    (start(prev(), brokers=("elsewhere:9093",)), None, "InputMoved", False, "other Kafka brokers"),
])
def test_where_a_new_deployment_starts(got: Start, position: dict[str, int] | None, reason: str | None,
                                       warning: bool, says: str) -> None:
    assert (got.position, got.reason, got.warning) == (position, reason, warning)
    assert says in got.note
