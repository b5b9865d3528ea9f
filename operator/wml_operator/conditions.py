"""Kubernetes conditions with Flux/kstatus semantics.

Ready is always present. Reconciling and Stalled are present (status True) only when abnormal, and
removed otherwise. lastTransitionTime changes only when a condition's status changes, and every
condition carries the generation it was computed for.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, status: bool, reason: str, message: str, generation: int | None,
               previous: dict[str, Any] | None, now: str) -> dict[str, Any]:
    value = "True" if status else "False"
    changed = previous is None or previous.get("status") != value
    return {"type": kind, "status": value, "reason": reason, "message": message[:1024],
            "lastTransitionTime": now if changed or not previous else previous.get("lastTransitionTime", now),
            "observedGeneration": generation}


def compute(previous: list[dict[str, Any]], *, ready: bool, reconciling: bool, stalled: bool, reason: str,
            message: str, generation: int | None, now: str | None = None) -> list[dict[str, Any]]:
    """The full new conditions list; conditions of other types (not ours) are kept as they were."""
    now = now or now_rfc3339()
    by_type = {c.get("type"): c for c in previous}
    out = [_condition(READY, ready, reason, message, generation, by_type.get(READY), now)]
    if reconciling and not stalled:
        out.append(_condition(RECONCILING, True, reason, message, generation, by_type.get(RECONCILING), now))
    if stalled:
        out.append(_condition(STALLED, True, reason, message, generation, by_type.get(STALLED), now))
    ours = {READY, RECONCILING, STALLED}
    return out + [c for c in previous if c.get("type") not in ours]


def same_ignoring_time(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def strip(conds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conds]

    return strip(a) == strip(b)
