"""The operator's every decision, as one pure function: (desired, observed, last status) -> the next action.

Nothing here does I/O; tests/unit/test_plan.py holds the table of cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from wml_api.models import DeploymentStatus

# The contract names them once; str values, so they compare equal to what any server sends.
RUNNING, STOPPED, INITIALIZING, FAILED = (DeploymentStatus.RUNNING.value, DeploymentStatus.STOPPED.value,
                                          DeploymentStatus.INITIALIZING.value, DeploymentStatus.FAILED.value)
RESTART_BACKOFF_BASE = 10.0
RESTART_BACKOFF_MAX = 600.0


class Do(StrEnum):
    CREATE = "create"
    ADOPT = "adopt"
    PATCH_STATE = "patch-state"  # start or stop the stream
    RESTART = "restart"  # PATCH RUNNING on a FAILED stream, counted
    RECREATE = "recreate"  # delete, then create
    DELETE = "delete"
    WAIT = "wait"  # something is changing on WML's side; look again soon
    NOTHING = "nothing"


@dataclass(frozen=True)
class Desired:
    state: str  # RUNNING | STOPPED
    spec_hash: str
    restart_policy: str = "OnFailure"
    paused: bool = False
    adopt_id: str | None = None
    deleting: bool = False
    deletion_policy: str = "Delete"


@dataclass(frozen=True)
class Observed:
    """The WML deployment found by id (or by our UID marker), as the last list showed it."""

    deployment_id: str
    status: str
    message: str | None = None
    spec_hash: str | None = None  # what it was made from, as its marker says (None: made by an older version)


@dataclass(frozen=True)
class Last:
    """What the resource's status said before this pass."""

    deployment_id: str | None = None
    spec_hash: str | None = None
    wml_status: str | None = None
    restart_count: int = 0
    last_restart_at: float | None = None  # epoch seconds


@dataclass(frozen=True)
class Action:
    do: Do
    reason: str  # CamelCase, for conditions and events
    message: str
    value: str | None = None  # the status to PATCH
    ready: bool = False  # WML is in the declared state
    stalled: bool = False  # only a user can fix this
    event: bool = False  # worth a Kubernetes event (drift, recreate, restart)
    wait: float | None = None  # seconds until this action can proceed (restart backoff)


def restart_backoff(restart_count: int) -> float:
    return float(min(RESTART_BACKOFF_BASE * 2 ** max(restart_count, 0), RESTART_BACKOFF_MAX))


def plan(desired: Desired, observed: Observed | None, last: Last, now: float) -> Action:
    if desired.deleting:
        return _plan_delete(desired, observed)
    if desired.paused:
        return _paused(desired, observed)
    if desired.adopt_id:
        if observed is None or observed.deployment_id != desired.adopt_id:
            return Action(Do.NOTHING, "AdoptionTargetNotFound",
                          f"deployment {desired.adopt_id} named by the deployment-id annotation does not exist",
                          stalled=True)
        if last.deployment_id != desired.adopt_id:
            return Action(Do.ADOPT, "Adopted", f"adopted existing deployment {desired.adopt_id}", event=True)
    if observed is None:
        if last.deployment_id and not desired.adopt_id:
            return Action(Do.CREATE, "DeletedBehindOurBack",
                          f"deployment {last.deployment_id} no longer exists in WML; creating a new one", event=True)
        return Action(Do.CREATE, "Creating", "creating the WML deployment")
    # The deployment's own marker says best what it was made from: the status may be a pass behind (a crash
    # between a re-create and its status write).
    built = observed.spec_hash or last.spec_hash
    if not desired.adopt_id and built and built != desired.spec_hash:
        return Action(Do.RECREATE, "SpecChanged",
                      "the model, topics, connections or credentials changed; re-creating the deployment", event=True)
    if observed.status == FAILED:
        return _plan_failed(desired, observed, last, now)
    return _plan_state(desired, observed, last)


def _plan_delete(desired: Desired, observed: Observed | None) -> Action:
    if desired.deletion_policy == "Orphan":
        return Action(Do.NOTHING, "Orphaned", "deletionPolicy Orphan: the WML deployment is left as it is")
    if observed is None:
        return Action(Do.NOTHING, "Deleted", "the WML deployment is gone")
    return Action(Do.DELETE, "Deleting", f"deleting WML deployment {observed.deployment_id}")


def _paused(desired: Desired, observed: Observed | None) -> Action:
    if observed is None:
        return Action(Do.NOTHING, "Paused", "reconciliation is paused; no WML deployment is observed")
    ready = observed.status == desired.state
    return Action(Do.NOTHING, "Paused",
                  f"reconciliation is paused; WML reports {observed.status}", ready=ready)


def _plan_failed(desired: Desired, observed: Observed, last: Last, now: float) -> Action:
    why = observed.message or "WML reports the stream FAILED"
    if desired.state == STOPPED:
        return Action(Do.PATCH_STATE, "Stopping", f"stopping the failed stream: {why}", value=STOPPED)
    if desired.restart_policy == "Never":
        return Action(Do.NOTHING, "Failed", f"{why} (restartPolicy Never)", stalled=True)
    backoff = restart_backoff(last.restart_count)
    if last.last_restart_at is not None and now < last.last_restart_at + backoff:
        remaining = last.last_restart_at + backoff - now
        return Action(Do.WAIT, "Failed", f"{why}; restarting in {remaining:.0f} s", wait=remaining)
    return Action(Do.RESTART, "Restarting", f"{why}; restart {last.restart_count + 1}", value=RUNNING, event=True)


def _plan_state(desired: Desired, observed: Observed, last: Last) -> Action:
    status, want = observed.status, desired.state
    if status == want:
        return Action(Do.NOTHING, "Running" if want == RUNNING else "Stopped",
                      f"the stream is {status}", ready=True)
    if want == RUNNING and status == INITIALIZING:
        return Action(Do.WAIT, "Starting", "WML is starting the stream")
    if want == RUNNING and status == STOPPED:
        if last.wml_status in (RUNNING, INITIALIZING) and last.deployment_id == observed.deployment_id:
            return Action(Do.PATCH_STATE, "StoppedBehindOurBack",
                          "the stream was stopped outside Kubernetes; starting it again", value=RUNNING, event=True)
        return Action(Do.PATCH_STATE, "Starting", "starting the stream", value=RUNNING)
    if want == STOPPED and status in (RUNNING, INITIALIZING):
        if last.wml_status == STOPPED and last.deployment_id == observed.deployment_id:
            return Action(Do.PATCH_STATE, "StartedBehindOurBack",
                          "the stream was started outside Kubernetes; stopping it again", value=STOPPED, event=True)
        return Action(Do.PATCH_STATE, "Stopping", "stopping the stream", value=STOPPED)
    return Action(Do.WAIT, "Waiting", f"WML reports {status}; waiting for it to settle")
