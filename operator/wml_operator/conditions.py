"""Kubernetes conditions with Flux/kstatus semantics.

Ready is always present. Reconciling and Stalled are present (status True) only when abnormal, and
removed otherwise. lastTransitionTime changes only when a condition's status changes, and every
condition carries the generation it was computed for. Each condition has its own reason and message: while
WML is unreachable, Ready keeps saying why the stream is (still) fine and Reconciling says what is retried.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"
OURS = frozenset({READY, RECONCILING, STALLED})


@dataclass(frozen=True)
class Says:
    """What one condition says: a CamelCase reason for machines and a message for humans."""

    reason: str
    message: str


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(conds: Iterable[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in conds if c.get("type") == kind), None)


def is_true(conds: Iterable[Mapping[str, Any]], kind: str) -> bool | None:
    """True or False as the condition says; None when there is no such condition."""
    found = find(conds, kind)
    return None if found is None else found.get("status") == "True"


def _condition(kind: str, status: bool, says: Says, generation: int | None, previous: Mapping[str, Any] | None,
               now: str) -> dict[str, Any]:
    value = "True" if status else "False"
    changed = previous is None or previous.get("status") != value
    return {"type": kind, "status": value, "reason": says.reason, "message": says.message[:1024],
            "lastTransitionTime": now if changed or not previous else previous.get("lastTransitionTime", now),
            "observedGeneration": generation}


def compute(previous: list[dict[str, Any]], *, ready: bool, ready_says: Says, reconciling: Says | None = None,
            stalled: Says | None = None, generation: int | None, now: str | None = None) -> list[dict[str, Any]]:
    """The full new conditions list; conditions of other types (not ours) are kept as they were."""
    now = now or now_rfc3339()
    by_type = {c.get("type"): c for c in previous}
    out = [_condition(READY, ready, ready_says, generation, by_type.get(READY), now)]
    if reconciling is not None and stalled is None:
        out.append(_condition(RECONCILING, True, reconciling, generation, by_type.get(RECONCILING), now))
    if stalled is not None:
        out.append(_condition(STALLED, True, stalled, generation, by_type.get(STALLED), now))
    return out + [c for c in previous if c.get("type") not in OURS]


def without_times(conds: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conds]
