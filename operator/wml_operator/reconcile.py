"""One reconciliation pass: spec -> secrets -> WML client -> observe -> plan -> act -> status draft."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from wml_api import errors as wml_errors
from wml_api.client import WMLClient
from wml_api.models import Deployment, DeploymentCreate, KafkaSource, KafkaTarget, StreamInput, StreamOutput
from wml_operator import conditions
from wml_operator.plan import Action, Desired, Do, Last, Observed, plan
from wml_operator.secrets import Endpoint, Resolved, SecretReader, SpecProblem, resolve
from wml_operator.settings import OperatorSettings
from wml_operator.spec import (
    ANNOTATION_DEPLOYMENT_ID,
    ANNOTATION_POLL_INTERVAL,
    ANNOTATION_RECONCILE,
    StreamingDeploymentSpec,
    explain_validation_error,
    parse_spec,
)
from wml_operator.wml import ClientPool, InstanceCache, Listing, built_from, marker

Event = tuple[str, str, str]  # (Normal | Warning, reason, message)
ACTIONS_THAT_CHANGE_WML = frozenset({Do.CREATE, Do.RECREATE, Do.PATCH_STATE, Do.RESTART})


class Transient(Exception):
    """WML is unreachable, slow, or asks us to slow down: retry after `delay` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass
class Deps:
    settings: OperatorSettings
    secrets: SecretReader
    pool: ClientPool
    cache: InstanceCache
    # Per resource UID: the endpoint it last used (to delete after its Secrets are gone) and failure counts.
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)  # UIDs this process sent a create for
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, uid: str) -> threading.Lock:
        with self.guard:
            return self.locks.setdefault(uid, threading.Lock())


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    finalized: bool = False


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def poll_interval(body: Mapping[str, Any], settings: OperatorSettings, changing: bool) -> float:
    if changing:
        return settings.poll_fast
    raw = (body.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_POLL_INTERVAL)
    try:
        return max(1.0, float(raw)) if raw else settings.poll_slow
    except ValueError:
        return settings.poll_slow


def is_changing(status: Mapping[str, Any], generation: int | None) -> bool:
    ready = next((c for c in status.get("conditions", []) if c.get("type") == conditions.READY), None)
    return ready is None or ready.get("status") != "True" or status.get("observedGeneration") != generation


def find(listing: Listing, target_id: str | None, uid: str) -> Deployment | None:
    if target_id and target_id in listing.by_id:
        return listing.by_id[target_id]
    return next(iter(listing.owned(uid)), None)


class Reconciler:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def run(self, body: Mapping[str, Any], *, deleting: bool = False) -> Outcome:
        uid = body["metadata"]["uid"]
        with self.deps.lock(uid):
            return self._run(body, deleting)

    def _run(self, body: Mapping[str, Any], deleting: bool) -> Outcome:
        meta = body["metadata"]
        uid, namespace, generation = meta["uid"], meta["namespace"], meta.get("generation")
        annotations = meta.get("annotations") or {}
        previous = dict(body.get("status") or {})
        last = _last(previous)
        try:
            spec = parse_spec(body.get("spec"))
            resolved: Resolved | None = resolve(self.deps.secrets, namespace, spec, self.deps.settings.defaults)
        except ValidationError as exc:
            return self._stalled(previous, generation, "InvalidSpec", explain_validation_error(exc), deleting, uid)
        except SpecProblem as problem:
            return self._stalled(previous, generation, problem.reason, problem.message, deleting, uid)
        assert resolved is not None
        self.deps.endpoints[uid] = resolved.endpoint
        client = self.deps.pool.client(resolved.endpoint)
        desired = Desired(state=str(spec.state), spec_hash=resolved.spec_hash, restart_policy=str(spec.restart_policy),
                          paused=annotations.get(ANNOTATION_RECONCILE) == "paused",
                          adopt_id=annotations.get(ANNOTATION_DEPLOYMENT_ID) or None, deleting=deleting,
                          deletion_policy=str(spec.deletion_policy))
        changing = is_changing(previous, generation)
        try:
            return self._act(body, spec, resolved, client, desired, last, previous, changing)
        except wml_errors.WMLError as err:
            if err.transient:
                raise self._transient(uid, err) from None
            return self._stalled(previous, generation, _reason_of(err), _message_of(err, spec), deleting, uid)

    def _observe(self, client: WMLClient, desired: Desired, last: Last, uid: str, max_age: float,
                 now: float) -> tuple[Deployment | None, Action]:
        found = find(self.deps.cache.deployments(client, max_age), desired.adopt_id or last.deployment_id, uid)
        action = plan(desired, _observed(found), last, now)
        if action.do == Do.CREATE and max_age > 0 and (last.deployment_id or uid in self.deps.created):
            # Never create from a stale list when a deployment may exist that it does not show: the one the
            # status names, or one this process made (a create whose answer was lost). A resource with neither
            # can have none newer than the cached list, which began after this process started (a dead
            # predecessor's create still in flight is what _delete_duplicates is for); a burst of 1,000 new
            # resources then shares that list instead of queueing one list call each.
            return self._observe(client, desired, last, uid, 0, now)
        return found, action

    def _act(self, body: Mapping[str, Any], spec: StreamingDeploymentSpec, resolved: Resolved, client: WMLClient,
             desired: Desired, last: Last, previous: dict[str, Any], changing: bool) -> Outcome:
        uid = body["metadata"]["uid"]
        now = time.time()
        found, action = self._observe(client, desired, last, uid,
                                      poll_interval(body, self.deps.settings, changing), now)
        status = {k: v for k, v in previous.items() if k != "kopf"}
        events: list[Event] = []
        model_id = (found.model_id if found else None) or spec.model_id
        finalized = False
        if action.do in (Do.CREATE, Do.RECREATE):
            if action.do == Do.RECREATE and found is not None:
                self._delete(client, found.id)
            found = self._create(client, body, spec, resolved)
            status.update(deploymentId=found.id, deploymentUrl=found.metadata.url, specHash=resolved.spec_hash,
                          restartCount=0, lastRestartTime=None)
            events.append(("Normal" if action.do == Do.CREATE and not action.event else "Warning",
                           action.reason, f"{action.message}: created deployment {found.id}"))
        elif action.do == Do.ADOPT and found is not None:
            status.update(deploymentId=found.id, deploymentUrl=found.metadata.url, specHash=resolved.spec_hash)
        elif action.do in (Do.PATCH_STATE, Do.RESTART) and found is not None and action.value:
            client.set_deployment_status(model_id, found.id, action.value, resolved.spark)
            found = client.get_instance_deployment(found.id)
            self.deps.cache.put(client, found)
            if action.do == Do.RESTART:
                status.update(restartCount=last.restart_count + 1, lastRestartTime=_iso(now))
        elif action.do == Do.DELETE and found is not None:
            self._delete(client, found.id)
            found, finalized = None, True
        elif action.do == Do.NOTHING and desired.deleting:
            finalized = True
        if action.do in (Do.ADOPT, Do.PATCH_STATE, Do.RESTART, Do.DELETE):
            # Every change we make is an event (create and recreate said theirs above); drift is a warning.
            events.append(("Warning" if action.event else "Normal", action.reason, action.message))
        if found is not None and not (desired.deleting or desired.paused or desired.adopt_id):
            events += self._delete_duplicates(client, found, uid)
        if found is not None and not desired.deleting:
            status.update(deploymentId=found.id, deploymentUrl=found.metadata.url, wmlStatus=found.status,
                          specHash=(None if desired.adopt_id else built_from(found)) or status.get("specHash")
                          or resolved.spec_hash)
        if not status.get("specHash") and found is None:
            status.pop("wmlStatus", None)
        ready = action.ready and action.do == Do.NOTHING
        if action.do in ACTIONS_THAT_CHANGE_WML and found is not None and not desired.deleting:
            # WML may answer with the declared state already (accept-only, or a stream stopped at once): plan
            # again on that answer, so this pass says Ready instead of the next poll, poll_fast seconds later.
            after = plan(desired, _observed(found), _last(status), now)
            if after.do == Do.NOTHING and after.ready:
                action, ready = after, True
        self.deps.failures.pop(uid, None)
        return self._finish(status, previous, body, action.reason, action.message, ready=ready,
                            stalled=action.stalled, events=events, finalized=finalized)

    def _create(self, client: WMLClient, body: Mapping[str, Any], spec: StreamingDeploymentSpec,
                resolved: Resolved) -> Deployment:
        meta = body["metadata"]
        text = spec.description or f"StreamingDeployment {meta['namespace']}/{meta['name']}"
        create = DeploymentCreate(
            name=f"{meta['namespace']}/{meta['name']}", type="stream",
            description=f"{text} {marker(meta['uid'], resolved.spec_hash)}",
            input=StreamInput(connection=resolved.input, source=KafkaSource(topic=spec.input.topic)),
            output=StreamOutput(connection=resolved.output, target=KafkaTarget(topic=spec.output.topic)))
        self.deps.created.add(meta["uid"])
        created = client.create_deployment(spec.model_id, create, resolved.spark)
        self.deps.cache.put(client, created)
        return created

    def _delete_duplicates(self, client: WMLClient, keep: Deployment, uid: str) -> list[Event]:
        """Other deployments with this resource's marker: a create whose request reached WML only after we had
        given up on it (timeout) and created again. One resource, one stream: the one in use stays."""
        extras = [d for d in self.deps.cache.deployments(client, float("inf")).owned(uid) if d.id != keep.id]
        for extra in extras:
            self._delete(client, extra.id)
        return [("Warning", "DuplicateDeleted", f"deleted deployment {d.id}, a second one of this resource "
                 f"(a create that reached WML after it had been retried); {keep.id} stays") for d in extras]

    def _delete(self, client: WMLClient, deployment_id: str) -> None:
        with contextlib.suppress(wml_errors.NotFound):  # gone already: that is what we wanted
            client.delete_instance_deployment(deployment_id)
        self.deps.cache.forget(client, deployment_id)

    def _finish(self, status: dict[str, Any], previous: Mapping[str, Any], body: Mapping[str, Any], reason: str,
                message: str, *, ready: bool, stalled: bool, events: list[Event] | None = None,
                finalized: bool = False) -> Outcome:
        generation = body["metadata"].get("generation")
        status["observedGeneration"] = generation
        status["message"] = message
        status["conditions"] = conditions.compute(
            previous.get("conditions", []), ready=ready, reconciling=not ready and not stalled, stalled=stalled,
            reason=reason, message=message, generation=generation)
        if _essence(status) != _essence(previous):
            status["lastSyncTime"] = conditions.now_rfc3339()
        events = list(events or [])
        was_ready = _ready(previous.get("conditions", []))
        if ready and was_ready is not True:
            if events and events[-1][0] == "Normal":
                # The pass that made the change made it Ready too (WML answered with the declared state): one
                # event says both, since every event is a write to the apiserver (1,000 creates: 1,000 fewer).
                kind, reason, text = events[-1]
                events[-1] = (kind, reason, f"{text}; Ready: {message}")
            else:
                events.append(("Normal", "Ready", message))
        elif not ready and was_ready is True and not stalled and not events:
            events.append(("Normal", "NotReady", message))
        return Outcome(status, events, finalized=finalized)

    def _stalled(self, previous: Mapping[str, Any], generation: int | None, reason: str, message: str,
                 deleting: bool, uid: str) -> Outcome:
        status = {k: v for k, v in previous.items() if k != "kopf"}
        body = {"metadata": {"generation": generation}}
        if deleting:
            remembered = self.deps.endpoints.get(uid)
            if not previous.get("deploymentId"):
                return Outcome(status, finalized=True)
            if remembered is not None:
                client = self.deps.pool.client(remembered)
                self._delete(client, str(previous["deploymentId"]))
                return Outcome(status, finalized=True)
            message = f"cannot delete WML deployment {previous['deploymentId']}: {message}"
            reason = "CannotDelete"
        before: dict[str, Any] = next(
            (c for c in previous.get("conditions", []) if c.get("type") == conditions.STALLED), {})
        news = [] if (before.get("reason"), before.get("message")) == (reason, message) else [
            ("Warning", reason, message)]  # once per problem, not once per poll
        return self._finish(status, previous, body, reason, message, ready=False, stalled=True, events=news)

    def _transient(self, uid: str, err: wml_errors.WMLError) -> Transient:
        if isinstance(err, wml_errors.HeldBack):
            # Nothing was sent, so nothing failed: wait out what is left of the pause, the backoff stays as it is.
            return Transient(str(err), (err.retry_after or 0.0) * random.uniform(1.0, 1.2))  # noqa: S311
        attempts = self.deps.failures.get(uid, 0) + 1
        self.deps.failures[uid] = attempts
        backoff = min(2.0 ** attempts, 300.0) * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto
        return Transient(str(err), max(backoff, err.retry_after or 0.0))


def _ready(conds: list[dict[str, Any]]) -> bool | None:
    ready = next((c for c in conds if c.get("type") == conditions.READY), None)
    return None if ready is None else ready.get("status") == "True"


def _essence(status: Mapping[str, Any]) -> Any:
    """Status without timestamps: what decides whether a write is needed."""
    return ({k: v for k, v in status.items() if k not in ("lastSyncTime", "conditions", "kopf")},
            [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions", [])])


def _last(status: Mapping[str, Any]) -> Last:
    """What a status says of the last pass, for plan()."""
    return Last(deployment_id=status.get("deploymentId"), spec_hash=status.get("specHash"),
                wml_status=status.get("wmlStatus"), restart_count=int(status.get("restartCount") or 0),
                last_restart_at=_epoch(status.get("lastRestartTime")))


def _observed(found: Deployment | None) -> Observed | None:
    return Observed(found.id, found.status, found.failure_message, built_from(found)) if found else None


def _reason_of(err: wml_errors.WMLError) -> str:
    if isinstance(err, wml_errors.Unauthorized | wml_errors.Forbidden):
        return "WMLUnauthorized"
    if isinstance(err, wml_errors.NotFound):
        return "ModelNotFound"
    if isinstance(err, wml_errors.TLSError):
        return "WMLTLSError"
    return "WMLRejected"


def _message_of(err: wml_errors.WMLError, spec: StreamingDeploymentSpec) -> str:
    if isinstance(err, wml_errors.NotFound):
        return f"spec.modelId: published model {spec.model_id} was not found: {err}"
    if isinstance(err, wml_errors.Unauthorized | wml_errors.Forbidden):
        return f"spec.wml.credentialsSecretRef: WML refused the credentials: {err}"
    return str(err)
