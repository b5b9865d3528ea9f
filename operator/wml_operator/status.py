"""The whole status of a pass, and its events, from what the pass did: one pure function, `outcome()`.

The reconciler reports what happened as a `Result`; this module turns it into the resource's next status
(typed by `spec.StreamingDeploymentStatus`), the Kubernetes events worth sending, and whether the deletion
may finish or when to try again. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from wml_operator import conditions
from wml_operator.conditions import Says
from wml_operator.handover import NOT_HANDED_OVER
from wml_operator.plan import Action, Do, Last
from wml_operator.spec import StreamingDeploymentStatus

Event = tuple[str, str, str]  # (Normal | Warning, reason, message)
KOPF = "kopf"  # kopf's own part of the status: never ours to write


@dataclass(frozen=True)
class Found:
    """The WML deployment as the pass left it (never its credentials)."""

    id: str
    url: str | None
    status: str
    built_from: str | None  # the spec hash its marker carries
    lag: int | None = None  # records behind the end of the input topic, if WML says
    endpoint: dict[str, str] | None = None  # where it lives (secrets.Endpoint.recorded())


@dataclass(frozen=True)
class Result:
    """What one pass decided and did."""

    done: Action  # the action carried out (or the stall / retry decided)
    verdict: Action  # what the conditions say: `done`, or what WML's answer to it made of it (plan.settle)
    found: Found | None = None  # the deployment after the action; None: none (or not looked at)
    spec_hash: str | None = None  # the hash of what the spec and Secrets resolve to now; None: unresolved
    adopting: bool = False
    created: str | None = None  # the id of the deployment this pass created
    extras_deleted: tuple[str, ...] = ()
    restarted_at: float | None = None  # epoch seconds of a RESTART done in this pass
    deleting: bool = False
    hand_over: str | None = None  # a deployment was created: where it starts reading (handover.Start.note)
    notes: tuple[Event, ...] = ()  # events of the pass's steps beside the action's own (hand-over, ...)
    model: tuple[str, str | None] | None = None  # the model id and version the spec resolved to in this pass


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    finalized: bool = False  # a deletion is done: the finalizer may go
    retry_after: float | None = None  # WML could not be reached: the next attempt, in seconds


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def last_of(status: Mapping[str, Any]) -> Last:
    """What a status says of the last pass, for plan()."""
    return Last(deployment_id=status.get("deploymentId"), spec_hash=status.get("specHash"),
                wml_status=status.get("wmlStatus"), restart_count=int(status.get("restartCount") or 0),
                last_restart_at=epoch(status.get("lastRestartTime")))


def outcome(previous: Mapping[str, Any], result: Result, generation: int | None, now: str | None = None) -> Outcome:
    """The status to write (whole, without kopf's part), the events, and what the handler does next."""
    now = now or conditions.now_rfc3339()
    old = StreamingDeploymentStatus.model_validate({k: v for k, v in previous.items() if k != KOPF})
    conds = [c.model_dump(by_alias=True) for c in old.conditions]
    verdict = result.verdict
    if verdict.do == Do.RETRY:
        return _retrying(previous, old, conds, verdict, generation, now)
    ready = verdict.ready and verdict.do == Do.NOTHING
    says = Says(verdict.reason, verdict.message)
    before = _dump(old)
    fields = _deployment_fields(old, result)
    hand_over = fields.get("handOver", old.hand_over)
    # A stream that may have scored records twice says so while it is Ready, not only in an event.
    ready_says = Says(says.reason, f"{says.message}; {hand_over}") if ready and hand_over and \
        hand_over.startswith(NOT_HANDED_OVER) else says
    status = _dump(StreamingDeploymentStatus.model_validate({
        **before, "observedGeneration": generation, "message": verdict.message,
        "conditions": conditions.compute(conds, ready=ready, ready_says=ready_says,
                                         reconciling=None if ready or verdict.stalled else says,
                                         stalled=says if verdict.stalled else None, generation=generation, now=now),
        **fields}))
    if _essence(status) != _essence(before):
        status["lastSyncTime"] = now
    return Outcome(status, _events(result, ready, conds), finalized=result.done.finalize)


def _deployment_fields(old: StreamingDeploymentStatus, result: Result) -> dict[str, Any]:
    """deploymentId, deploymentUrl, wmlStatus, specHash and the restart counts after the pass (by their names in
    the status; None removes a field)."""
    done, found = result.done, result.found
    update: dict[str, Any] = {}
    spec_hash = old.spec_hash
    if result.created is not None:
        spec_hash = result.spec_hash
        update.update(restartCount=0, lastRestartTime=None, handOver=result.hand_over)
    elif done.do == Do.ADOPT:
        spec_hash = result.spec_hash
    if done.do == Do.RESTART and result.restarted_at is not None:
        update.update(restartCount=old.restart_count + 1, lastRestartTime=iso(result.restarted_at))
    if found is not None and not result.deleting:
        # The deployment's marker says what it was made from (an adopted one's says nothing of ours).
        spec_hash = (None if result.adopting else found.built_from) or spec_hash or result.spec_hash
        update.update(deploymentId=found.id, deploymentUrl=found.url, wmlStatus=found.status, lag=found.lag)
        if found.endpoint is not None:
            update["endpoint"] = found.endpoint
    update["specHash"] = spec_hash
    if result.model is not None and found is not None and not result.deleting and \
            (result.created is not None or done.do == Do.ADOPT or old.model_id is None):
        # What the deployment runs: set when one is made (or first seen), kept while a new version waits.
        update.update(modelId=result.model[0], modelVersion=result.model[1])
    if not spec_hash and found is None:
        update["wmlStatus"] = None
    if found is None and (result.deleting or done.do == Do.DELETE):
        update["lag"] = None
    return update


def _retrying(previous: Mapping[str, Any], old: StreamingDeploymentStatus, conds: list[dict[str, Any]],
              verdict: Action, generation: int | None, now: str) -> Outcome:
    """WML could not be reached: Reconciling says so, with its answer; Ready stays as it was (a blip of the
    API is not an outage of the stream) and so does everything else."""
    before = conditions.find(conds, conditions.READY)
    kept = Says(str(before.get("reason", "")), str(before.get("message", ""))) if before else \
        Says(verdict.reason, verdict.message)
    new = conditions.compute(conds, ready=conditions.is_true(conds, conditions.READY) is True, ready_says=kept,
                             reconciling=Says(verdict.reason, verdict.message), generation=generation, now=now)
    status = _dump(old)
    if conditions.without_times(new) != conditions.without_times(conds):
        status.update(conditions=new, lastSyncTime=now)
    return Outcome(status, [], retry_after=verdict.retry_after)


def _events(result: Result, ready: bool, conds: list[dict[str, Any]]) -> list[Event]:
    done, verdict = result.done, result.verdict
    if verdict.stalled:
        before = conditions.find(conds, conditions.STALLED) or {}
        if (before.get("reason"), before.get("message")) == (verdict.reason, verdict.message):
            return []  # once per problem, not once per poll
        return [("Warning", verdict.reason, verdict.message)]
    events: list[Event] = []
    if result.created is not None:
        plain = done.do == Do.CREATE and not done.event
        events.append(("Normal" if plain else "Warning", done.reason, f"{done.message}: created deployment "
                                                                      f"{result.created}"))
    elif done.do in (Do.ADOPT, Do.PATCH_STATE, Do.RESTART, Do.DELETE):
        # Every change we make is an event; drift is a warning.
        events.append(("Warning" if done.event else "Normal", done.reason, done.message))
    events += result.notes
    keep = result.found.id if result.found else "?"
    events += [("Warning", "DuplicateDeleted", f"deleted deployment {extra}, a second one of this resource (a create "
                f"that reached WML after it had been retried); {keep} stays") for extra in result.extras_deleted]
    was_ready = conditions.is_true(conds, conditions.READY)
    if ready and was_ready is not True:
        if events and events[-1][0] == "Normal":
            # The pass that made the change made it Ready too (WML answered with the declared state): one event
            # says both, since every event is a write to the apiserver.
            kind, reason, text = events[-1]
            events[-1] = (kind, reason, f"{text}; Ready: {verdict.message}")
        else:
            events.append(("Normal", "Ready", verdict.message))
    elif not ready and was_ready is True and not events:
        events.append(("Normal", "NotReady", verdict.message))
    return events


def _dump(status: StreamingDeploymentStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, exclude={KOPF}, mode="json")


def _essence(status: Mapping[str, Any]) -> Any:
    """Status without timestamps: what decides whether lastSyncTime moves."""
    return ({k: v for k, v in status.items() if k not in ("lastSyncTime", "conditions")},
            conditions.without_times(status.get("conditions", [])))
