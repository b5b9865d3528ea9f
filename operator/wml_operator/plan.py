"""The operator's every decision, as pure functions: (desired, observed, last status) -> the next action.

`plan()` decides what to do with a resource whose spec and Secrets resolved; `plan_unresolved()` what to do when
they did not; `plan_refused()` and `retry_delay()` what a WML error means; `settle()` what WML's answer to a
change means; `poll_interval()` when to look again. Nothing here does I/O: tests/unit/test_plan.py holds the
tables of cases, and wml_operator.reconcile only carries the actions out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from wml_api import errors as wml_errors
from wml_api.models import EXT_DEAD_LETTER_TOPIC, DeploymentStatus
from wml_operator import conditions
from wml_operator.spec import ANNOTATION_POLL_INTERVAL

# The contract names them once; str values, so they compare equal to what any server sends.
RUNNING, STOPPED, INITIALIZING, FAILED = (DeploymentStatus.RUNNING.value, DeploymentStatus.STOPPED.value,
                                          DeploymentStatus.INITIALIZING.value, DeploymentStatus.FAILED.value)
RESTART_BACKOFF_BASE = 10.0
RESTART_BACKOFF_MAX = 600.0
RETRY_BACKOFF_MAX = 300.0


class Do(StrEnum):
    CREATE = "create"
    ADOPT = "adopt"
    PATCH_STATE = "patch-state"  # start or stop the stream
    RESTART = "restart"  # PATCH RUNNING on a FAILED stream, counted
    RECREATE = "recreate"  # delete, then create
    DELETE = "delete"
    LOOK_AGAIN = "look-again"  # the list may be too old to create from: list again, then plan again
    WAIT = "wait"  # something is changing on WML's side; look again soon
    RETRY = "retry"  # WML could not be reached: nothing happened, try again after `retry_after`
    NOTHING = "nothing"


CHANGES_WML = frozenset({Do.CREATE, Do.RECREATE, Do.PATCH_STATE, Do.RESTART})


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
class View:
    """What one list of the instance showed of this resource."""

    found: Observed | None
    # Other deployments carrying this resource's marker: a create that reached WML only after it had been given
    # up on (timeout) and sent again. One resource, one stream: they go.
    extras: tuple[str, ...] = ()
    fresh: bool = True  # the list began after this pass asked for it (not one shared from the cache)
    made_here: bool = False  # this process sent a create for the resource (its answer may have been lost)


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
    finalize: bool = False  # a deletion is complete once this action is done: the finalizer may go
    retry_after: float | None = None  # Do.RETRY: seconds until the next attempt
    extras: tuple[str, ...] = field(default=())  # duplicate deployments to delete beside the action


def restart_backoff(restart_count: int) -> float:
    return float(min(RESTART_BACKOFF_BASE * 2 ** max(restart_count, 0), RESTART_BACKOFF_MAX))


def plan(desired: Desired, view: View, last: Last, now: float) -> Action:
    action = _plan(desired, view.found, last, now)
    if action.do == Do.CREATE and not view.fresh and (last.deployment_id or view.made_here):
        # Never create from a shared list when a deployment may exist that it does not show: the one the status
        # names, or one this process made (a create whose answer was lost). A resource with neither can have
        # none newer than the cached list, which began after this process started; a burst of 1,000 new
        # resources then shares that list instead of queueing one list call each.
        return Action(Do.LOOK_AGAIN, "Observing", "listing the instance's deployments again before creating")
    if view.found is not None and view.extras and not (desired.deleting or desired.paused or desired.adopt_id):
        action = replace(action, extras=view.extras)
    return action


def _plan(desired: Desired, observed: Observed | None, last: Last, now: float) -> Action:
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
        return Action(Do.NOTHING, "Orphaned", "deletionPolicy Orphan: the WML deployment is left as it is",
                      finalize=True)
    if observed is None:
        return Action(Do.NOTHING, "Deleted", "the WML deployment is gone", finalize=True)
    return Action(Do.DELETE, "Deleting", f"deleting WML deployment {observed.deployment_id}", finalize=True)


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


def settle(desired: Desired, done: Action, after: Observed | None, last: Last, now: float) -> Action:
    """What WML's answer to a change says: it may already be in the declared state (accept-only, or a stream
    stopped at once). Then this pass reports Ready, instead of the next poll, poll_fast seconds later."""
    if done.do not in CHANGES_WML or after is None or desired.deleting:
        return done
    again = _plan(desired, after, last, now)
    return again if again.do == Do.NOTHING and again.ready else done


def plan_unresolved(deleting: bool, last: Last, endpoint_known: bool, reason: str, message: str) -> Action:
    """The spec is invalid, or a Secret it names is missing or wrong: a user must fix it. A deletion still
    goes through the login kept for it (wml_operator.login_copies), when there is one."""
    if not deleting:
        return Action(Do.NOTHING, reason, message, stalled=True)
    if not last.deployment_id:
        return Action(Do.NOTHING, "Deleted", "no WML deployment was made", finalize=True)
    if endpoint_known:
        return Action(Do.DELETE, "Deleting", f"deleting WML deployment {last.deployment_id} with the login kept "
                                             f"for it ({message})", finalize=True)
    return Action(Do.NOTHING, "CannotDelete", f"cannot delete WML deployment {last.deployment_id}: {message}",
                  stalled=True)


def plan_refused(err: wml_errors.WMLError, model_id: str, field: str = "spec.modelId") -> Action:
    """A WML error that retrying will not cure: the resource is Stalled with WML's answer. `field`: where the model
    comes from (spec.modelId, or spec.modelRef: the PublishedModel's)."""
    if isinstance(err, wml_errors.Unauthorized | wml_errors.Forbidden):
        return Action(Do.NOTHING, "WMLUnauthorized",
                      f"spec.wml.credentialsSecretRef: WML refused the credentials: {err}", stalled=True)
    if isinstance(err, wml_errors.NotFound):
        return Action(Do.NOTHING, "ModelNotFound", f"{field}: published model {model_id} was not found: {err}",
                      stalled=True)
    if err.code in ("model_not_deployable", "missing_input_schema", "pickled_models_disabled"):
        # Published, but this service will not run it: another engine's (e.g. Spark MLlib), without an input
        # schema, or pickled where pickles are turned off. The model must be published again, differently.
        return Action(Do.NOTHING, "ModelNotDeployable",
                      f"{field}: published model {model_id} cannot be deployed by this WML service: "
                      f"{err.message} ({err.status} {err.code})", stalled=True)
    if isinstance(err, wml_errors.TLSError):
        return Action(Do.NOTHING, "WMLTLSError", str(err), stalled=True)
    return Action(Do.NOTHING, "WMLRejected", str(err), stalled=True)


def plan_unsupported(dead_letter_topic: str | None, extensions: frozenset[str]) -> Action | None:
    """A spec field the server cannot honour, before anything is created: Stalled. A server without the extension
    would ignore the field and write the records that cannot be scored to the output topic. None: nothing
    missing."""
    if dead_letter_topic and EXT_DEAD_LETTER_TOPIC not in extensions:
        return Action(Do.NOTHING, "DeadLetterTopicUnsupported",
                      f"spec.output.deadLetterTopic: the WML server does not support a dead-letter topic (it does not "
                      f"list the extension {EXT_DEAD_LETTER_TOPIC}); nothing was created. Remove the field or use a "
                      f"server that supports it", stalled=True)
    return None


def retry_delay(attempts: int, retry_after: float | None, *, held_back: bool, jitter: float) -> float:
    """Seconds until a pass that could not reach WML is tried again: exponential backoff (attempts counts this
    failure too) with `jitter` in [0, 1) spreading retries, never sooner than WML's Retry-After. A request held
    back by an earlier Retry-After was never sent, so nothing failed: only the rest of that wait counts."""
    if held_back:
        return (retry_after or 0.0) * (1.0 + 0.2 * jitter)
    backoff = min(2.0 ** attempts, RETRY_BACKOFF_MAX) * (0.8 + 0.4 * jitter)
    return max(backoff, retry_after or 0.0)


def plan_transient(err: wml_errors.WMLError, delay: float) -> Action:
    return Action(Do.RETRY, "WMLUnavailable", f"WML unavailable, retrying in {delay:.0f} s: {err}",
                  retry_after=delay)


def is_changing(status: Mapping[str, Any], generation: int | None) -> bool:
    """Not Ready, or a spec not yet observed: polled fast."""
    return (conditions.is_true(status.get("conditions", []), conditions.READY) is not True
            or status.get("observedGeneration") != generation)


def is_stalled(status: Mapping[str, Any]) -> bool:
    return conditions.is_true(status.get("conditions", []), conditions.STALLED) is True


def poll_interval(body: Mapping[str, Any], fast: float, slow: float, changing: bool) -> float:
    if changing:
        return fast
    raw = (body.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_POLL_INTERVAL)
    try:
        return max(1.0, float(raw)) if raw else slow
    except ValueError:
        return slow
