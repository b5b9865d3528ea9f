"""One reconciliation pass, carried out: spec -> Secrets -> WML instance -> look -> plan -> act -> status.

Every decision is wml_operator.plan's and the status is wml_operator.status's; this module only does the I/O
they call for, through two small interfaces (wml_operator.ports: `WML`, `Connector`), so that tests/unit drives
it with an in-memory WML and the integration tests with the real service. A re-create is `_hand_over`: the
steps wml_operator.handover decides, each on the endpoint where its deployment lives.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from wml_api import errors as wml_errors
from wml_api.models import (
    EXT_STARTING_OFFSETS,
    Deployment,
    DeploymentCreate,
    KafkaSource,
    KafkaTarget,
    StartingOffsets,
    StreamInput,
    StreamOutput,
)
from wml_api.wire import describe_validation_error
from wml_operator import handover
from wml_operator import plan as planning
from wml_operator.login_copies import LoginNotKept, Logins, MemoryLogins
from wml_operator.model_refs import KubeModels, ModelNotReady, ModelReader, choose, same_place
from wml_operator.plan import STOPPED, Action, Desired, Do, Last, Observed, View
from wml_operator.ports import WML, Connector, Elsewhere
from wml_operator.resources import Resources
from wml_operator.secrets import (
    Defaults,
    Endpoint,
    Resolved,
    SecretReader,
    SpecProblem,
    recorded_endpoint,
    resolve,
)
from wml_operator.spec import (
    ANNOTATION_DEPLOYMENT_ID,
    ANNOTATION_RECONCILE,
    StreamingDeploymentSpec,
    parse_spec,
)
from wml_operator.status import Event, Found, Outcome, Result, last_of, outcome
from wml_operator.wml import Listing, built_from, marker

log = logging.getLogger(__name__)


def _observed(found: Deployment | None) -> Observed | None:
    return Observed(found.id, found.status, found.failure_message, built_from(found)) if found else None


def _found(deployment: Deployment | None, endpoint: Endpoint | None = None) -> Found | None:
    if deployment is None:
        return None
    details = deployment.entity.status_details
    return Found(deployment.id, deployment.metadata.url, deployment.status, built_from(deployment),
                 lag=details.lag if details is not None else None,
                 endpoint=endpoint.recorded() if endpoint is not None else None)


@dataclass(frozen=True)
class Looked:
    """What one list shows of a resource: the deployment built from its spec as it is now (`current`), the one
    its status names when that is another (`previous`: to hand over from), and any other of its deployments
    (`extras`: a create that reached WML after it was given up on and sent again)."""

    current: Deployment | None
    previous: Deployment | None = None
    extras: tuple[str, ...] = ()


def look(listing: Listing, target_id: str | None, uid: str, want: str | None = None,
         last_hash: str | None = None) -> Looked:
    """`target_id`: the deployment the status (or the adoption annotation) names; `want`: the spec hash now
    (None: whatever the target is, it is current); `last_hash`: what the status says the target was built from,
    for deployments whose marker does not say."""
    named = listing.by_id.get(target_id) if target_id else None
    owned = listing.owned(uid)

    def built(deployment: Deployment) -> str | None:
        return built_from(deployment) or (last_hash if named is not None and deployment.id == named.id else None)

    ordered = ([named] if named is not None else []) + [d for d in owned if named is None or d.id != named.id]
    if want is None:
        current = ordered[0] if ordered else None
    else:
        # Built from what the spec says now; one built from nobody knows what (an older operator's, with no
        # hash in its marker or the status) is taken as it is, as it always was.
        current = next((d for d in ordered if built(d) == want), None)
        if current is None and named is not None and built(named) is None:
            current = named
    previous = None
    if want is not None and current is None and ordered:
        previous = ordered[0]
    elif named is not None and current is not None and named.id != current.id:
        previous = named
    kept = {d.id for d in (current, previous) if d is not None}
    return Looked(current, previous, tuple(d.id for d in owned if d.id not in kept))


def _model_field(spec: StreamingDeploymentSpec) -> str:
    return f"spec.modelRef (PublishedModel {spec.model_ref.name})" if spec.model_ref else "spec.modelId"


class Reconciler:
    def __init__(self, secrets: SecretReader, wml: Connector, resources: Resources, defaults: Defaults,
                 logins: Logins | None = None, models: ModelReader | None = None) -> None:
        self.secrets = secrets
        self.models: ModelReader = models if models is not None else KubeModels()
        self.wml = wml
        self.resources = resources
        self.defaults = defaults
        self.logins: Logins = logins if logins is not None else MemoryLogins()

    def run(self, body: Mapping[str, Any], *, deleting: bool = False) -> Outcome:
        meta = body["metadata"]
        with self.resources.passing(meta["uid"]) as lock, lock:
            result = self._pass(body, deleting)
        return outcome(body.get("status") or {}, result, meta.get("generation"))

    def _pass(self, body: Mapping[str, Any], deleting: bool) -> Result:
        meta = body["metadata"]
        uid, namespace = meta["uid"], meta["namespace"]
        annotations = meta.get("annotations") or {}
        last = last_of(body.get("status") or {})
        model_label, model_field = "?", "spec.modelId"
        try:
            try:
                spec = parse_spec(body.get("spec"))
                model_field = _model_field(spec)
                chosen = choose(spec, namespace, body.get("status") or {}, self.models, deleting)
                model_label = chosen.id
                resolved = resolve(self.secrets, namespace, spec, self.defaults, chosen.id, chosen.version)
                if not deleting:
                    same_place(chosen, resolved.endpoint)
            except ValidationError as exc:
                return self._unresolved(body, deleting, last, "InvalidSpec", describe_validation_error(exc, "spec"))
            except SpecProblem as problem:
                return self._unresolved(body, deleting, last, problem.reason, problem.message)
            except ModelNotReady as waiting:
                wait = Action(Do.WAIT, waiting.reason, f"{waiting.message}; the stream starts once it is Ready")
                return Result(wait, wait, deleting=deleting)
            try:
                self._keep_logins(body, resolved.endpoint, last)
            except LoginNotKept as exc:
                if not deleting:
                    delay = planning.retry_delay(self.resources.failed(uid), None, held_back=False,
                                                 jitter=random.random())  # noqa: S311 - jitter, not crypto
                    retry = Action(Do.RETRY, "LoginNotKept", f"{exc}; retrying in {delay:.0f} s",
                                   retry_after=delay)
                    return Result(retry, retry, deleting=deleting)
                # A deletion creates nothing, and the resource's own Secrets are here: it goes on without a copy.
                log.warning("%s; deleting with the resource's own Secrets", exc)
            desired = Desired(state=str(spec.state), spec_hash=resolved.spec_hash,
                              restart_policy=str(spec.restart_policy),
                              paused=annotations.get(ANNOTATION_RECONCILE) == "paused",
                              adopt_id=annotations.get(ANNOTATION_DEPLOYMENT_ID) or None, deleting=deleting,
                              deletion_policy=str(spec.deletion_policy))
            result = self._act(body, spec, resolved, desired, last)
            self.resources.reached(uid)
            return replace(result, model=(resolved.model_id, resolved.model_version))
        except wml_errors.WMLError as err:
            if not err.transient:
                self.resources.reached(uid)
                refused = planning.plan_refused(err, model_label, model_field)
                return Result(refused, refused, deleting=deleting)
            attempts = 0 if isinstance(err, wml_errors.HeldBack) else self.resources.failed(uid)
            delay = planning.retry_delay(attempts, err.retry_after, held_back=isinstance(err, wml_errors.HeldBack),
                                         jitter=random.random())  # noqa: S311 - jitter, not crypto
            retry = planning.plan_transient(err, delay)
            return Result(retry, retry, deleting=deleting)

    def _keep_logins(self, body: Mapping[str, Any], now: Endpoint, last: Last) -> None:
        """Before any WML call that could create a deployment: the logins its deletion will need, kept where the
        resource's namespace cannot take them first. During a move, the old endpoint's too."""
        meta = body["metadata"]
        recorded = (body.get("status") or {}).get("endpoint")
        endpoints = [now]
        if last.deployment_id and recorded and not now.same_place(recorded):
            endpoints.append(recorded_endpoint(self.secrets, meta["namespace"], recorded, now,
                                               self.logins.kept(meta["uid"]), self.defaults))
        self.logins.keep(meta["uid"], f"{meta['namespace']}/{meta['name']}", endpoints)

    def _unresolved(self, body: Mapping[str, Any], deleting: bool, last: Last, reason: str,
                    message: str) -> Result:
        """A deletion without the resource's Secrets goes through the login kept for the endpoint where its
        deployment lives (status.endpoint; before that was recorded, the one login kept)."""
        kept = self.logins.kept(body["metadata"]["uid"]) if deleting and last.deployment_id else ()
        recorded = (body.get("status") or {}).get("endpoint")
        where = next((ep for ep in kept if recorded and ep.same_place(recorded)), None) or \
            (kept[0] if kept and not recorded else None)
        action = planning.plan_unresolved(deleting, last, where is not None, reason, message)
        if action.do == Do.DELETE and where is not None and last.deployment_id:
            self.wml.instance(where).delete(last.deployment_id)
        return Result(action, action, deleting=deleting)

    def _act(self, body: Mapping[str, Any], spec: StreamingDeploymentSpec, resolved: Resolved, desired: Desired,
             last: Last) -> Result:
        meta = body["metadata"]
        uid, namespace = meta["uid"], meta["namespace"]
        wml = self.wml.instance(resolved.endpoint)
        now = time.time()
        recorded = (body.get("status") or {}).get("endpoint")
        listing = wml.listing(self.resources.poll_interval(body))
        # Moved: the status names a deployment on an endpoint the spec no longer does. One the spec's endpoint
        # lists (the same service under another URL) has not moved.
        moved = bool(last.deployment_id and recorded and not resolved.endpoint.same_place(recorded)
                     and not desired.adopt_id and last.deployment_id not in listing.by_id)
        target = desired.adopt_id or (None if moved else last.deployment_id)
        want = None if desired.adopt_id else desired.spec_hash
        looked = look(listing, target, uid, want, last.spec_hash)
        there, old = wml, resolved.endpoint
        orphaning = desired.deleting and desired.deletion_policy == "Orphan"
        if moved and not orphaning:
            # The status names a deployment on the endpoint the spec no longer does: it is stopped and deleted
            # there (its absence is checked there too, before anyone calls it deleted).
            old = recorded_endpoint(self.secrets, namespace, recorded or {}, resolved.endpoint,
                                    self.logins.kept(uid), self.defaults)
            there = Elsewhere(self.wml.instance(old), f"the old endpoint {old.url} (deployment {last.deployment_id})")
            gone = there.listing(self.resources.poll_interval(body)).by_id.get(str(last.deployment_id))
            looked = replace(looked, previous=gone or looked.previous)
        if looked.previous is not None and not desired.paused:
            if desired.deleting:
                if not orphaning:
                    there.delete(looked.previous.id)
                looked = replace(looked, previous=None)
            elif not desired.adopt_id:
                return self._hand_over(body, spec, resolved, desired, last, wml, there, old, looked)
        return self._step(body, spec, resolved, desired, last, wml, looked, now)

    def _step(self, body: Mapping[str, Any], spec: StreamingDeploymentSpec, resolved: Resolved, desired: Desired,
              last: Last, wml: WML, looked: Looked, now: float) -> Result:
        uid = body["metadata"]["uid"]
        found, extras = looked.current or looked.previous, looked.extras
        action = planning.plan(desired, View(_observed(found), extras, fresh=False,
                                             made_here=self.resources.made_here(uid)), last, now)
        if action.do == Do.LOOK_AGAIN:
            again = look(wml.listing(0), desired.adopt_id or last.deployment_id, uid,
                         None if desired.adopt_id else desired.spec_hash, last.spec_hash)
            if again.previous is not None and again.current is None and not desired.adopt_id:
                return self._hand_over(body, spec, resolved, desired, last, wml, wml, resolved.endpoint, again)
            found, extras = again.current or again.previous, again.extras
            action = planning.plan(desired, View(_observed(found), extras), last, now)
        model_id = (found.model_id if found else None) or resolved.model_id
        created: str | None = None
        notes: tuple[Event, ...] = ()
        start: handover.Start | None = None
        if action.do == Do.CREATE:
            unsupported = planning.plan_unsupported(spec.output.dead_letter_topic, wml.extensions())
            if unsupported is not None:
                return Result(unsupported, unsupported, deleting=desired.deleting)
            start = handover.start_of(None, topic=spec.input.topic, brokers=frozenset(),
                                      starting_offsets=str(spec.input.starting_offsets),
                                      keep_across_topics=False, old_extensions=frozenset(),
                                      new_extensions=wml.extensions())
            found, notes = self._create(wml, body, spec, resolved, desired, start)
            created = found.id
        elif action.do in (Do.PATCH_STATE, Do.RESTART) and found is not None and action.value:
            found = wml.set_state(model_id, found.id, action.value, resolved.spark)
        elif action.do == Do.DELETE and found is not None:
            wml.delete(found.id)
            found = None
        for extra in action.extras:
            wml.delete(extra)
        after = Last(found.id if found else None, resolved.spec_hash, found.status if found else None,
                     last.restart_count, last.last_restart_at) if created else last
        verdict = planning.settle(desired, action, _observed(found), after, now)
        return Result(action, verdict, found=_found(found, resolved.endpoint), spec_hash=resolved.spec_hash,
                      adopting=bool(desired.adopt_id), created=created, extras_deleted=action.extras,
                      restarted_at=now if action.do == Do.RESTART else None, deleting=desired.deleting,
                      hand_over=start.note if start is not None else None, notes=notes)

    def _hand_over(self, body: Mapping[str, Any], spec: StreamingDeploymentSpec, resolved: Resolved,
                   desired: Desired, last: Last, wml: WML, there: WML, old: Endpoint, looked: Looked) -> Result:
        """Replaces looked.previous by a deployment of the spec as it is now, step by step (wml_operator.handover):
        every step leaves WML where the next pass, after any crash, takes it up."""
        uid = body["metadata"]["uid"]
        if looked.current is None:
            # A create must never rest on a list that may not show one made already (a pass killed after it).
            fresh = look(wml.listing(0), None, uid, desired.spec_hash)
            looked = replace(looked, current=fresh.current, extras=tuple(
                e for e in fresh.extras if e != looked.previous.id) if looked.previous else fresh.extras)
        previous_deployment = looked.previous
        assert previous_deployment is not None
        previous = handover.Previous.of(previous_deployment)
        current, created, start_note = looked.current, None, None
        notes: tuple[Event, ...] = ()
        checked, drained = False, False
        changed = Action(Do.RECREATE, "SpecChanged", "the model, topics, connections or credentials changed; "
                                                     "re-creating the deployment", event=True)
        while True:
            step = handover.next_step(desired.state, previous, current is not None, checked)
            if step == handover.Step.CHECK:
                refused = self._check(wml, spec, resolved, body)
                if refused is not None:
                    return self._restore(desired, previous, resolved, there, old, refused, last)
                checked = True
            elif step == handover.Step.DRAIN:
                stopped = there.set_state(previous.model_id or resolved.model_id, previous.deployment_id, STOPPED,
                                          resolved.spark)
                previous, drained = handover.Previous.of(stopped), True
                if handover.after_drain(previous.status) == handover.Step.WAIT:
                    wait = Action(Do.WAIT, "Draining", f"stopping deployment {previous.deployment_id} to hand its "
                                                       "stream over; it is finishing its last batch")
                    return Result(wait, wait, found=_found(stopped, old), spec_hash=resolved.spec_hash)
            elif step == handover.Step.SWITCH:
                if not drained:  # the position a list showed may be older than the stop
                    fresh_previous = there.get(previous.deployment_id)
                    previous = handover.Previous.of(fresh_previous) if fresh_previous else previous
                start = handover.start_of(
                    previous, topic=spec.input.topic, brokers=frozenset(resolved.input.kafka_brokers_sasl),
                    starting_offsets=str(spec.input.starting_offsets),
                    keep_across_topics=spec.input.keep_position_on_topic_change,
                    old_extensions=there.extensions(), new_extensions=wml.extensions())
                try:
                    current, notes = self._create(wml, body, spec, resolved, desired, start)
                    start_note = start.note
                except wml_errors.WMLError as err:
                    if err.transient:
                        raise
                    refused = planning.plan_refused(err, resolved.model_id, _model_field(spec))
                    return self._restore(desired, previous, resolved, there, old, refused, last)
                created = current.id
            else:  # RETIRE
                there.delete(previous.deployment_id)
                break
        if created is None:
            # Made by a pass that was killed before it retired the previous one: from here on, a plain pass.
            result = self._step(body, spec, resolved, desired, last, wml, Looked(current, None, looked.extras),
                                time.time())
            retired: Event = ("Normal", "Retired", f"deleted deployment {previous.deployment_id}, which deployment "
                                                   f"{current.id if current else '?'} replaced")
            return replace(result, notes=(*result.notes, retired))
        for extra in looked.extras:
            wml.delete(extra)
        now = time.time()
        after = Last(current.id if current else None, resolved.spec_hash, current.status if current else None)
        verdict = planning.settle(desired, changed, _observed(current), after, now)
        return Result(changed, verdict, found=_found(current, resolved.endpoint), spec_hash=resolved.spec_hash,
                      created=created, extras_deleted=looked.extras, hand_over=start_note, notes=notes)

    def _check(self, wml: WML, spec: StreamingDeploymentSpec, resolved: Resolved,
               body: Mapping[str, Any]) -> Action | None:
        """The new deployment can be made: the server supports what the spec asks for, and the whole create
        passes where the server checks one without making it; else the model (and, by the call, the login). None
        when it can; else why not (Stalled)."""
        unsupported = planning.plan_unsupported(spec.output.dead_letter_topic, wml.extensions())
        if unsupported is not None:
            return unsupported
        try:
            if handover.can_check(wml.extensions()):
                wml.check(resolved.model_id, self._body(body, spec, resolved, None, STOPPED, wml.extensions()),
                          resolved.spark)
            else:
                wml.model(resolved.model_id)
        except wml_errors.WMLError as err:
            if err.transient:
                raise
            return planning.plan_refused(err, resolved.model_id, _model_field(spec))
        return None

    def _restore(self, desired: Desired, previous: handover.Previous, resolved: Resolved, there: WML,
                 old: Endpoint, refused: Action, last: Last) -> Result:
        """The new deployment cannot be made: the resource is Stalled and the stream it has runs on as declared."""
        found = there.get(previous.deployment_id)
        value = handover.restore_to(desired.state, previous)
        if found is not None and value is not None:
            found = there.set_state(str(found.model_id or previous.model_id), previous.deployment_id, value,
                                    resolved.spark)
        kept = "keeps running" if found is not None and found.status != STOPPED else "stays as it was"
        stalled = replace(refused, message=f"{refused.message}; deployment {previous.deployment_id} {kept} until the "
                                           "spec can be deployed" if found is not None else refused.message)
        return Result(stalled, stalled, found=_found(found, old), spec_hash=last.spec_hash)

    def _body(self, body: Mapping[str, Any], spec: StreamingDeploymentSpec, resolved: Resolved,
              start: handover.Start | None, declared: str, extensions: frozenset[str]) -> DeploymentCreate:
        meta = body["metadata"]
        text = spec.description or f"StreamingDeployment {meta['namespace']}/{meta['name']}"
        source = KafkaSource(topic=spec.input.topic)
        if EXT_STARTING_OFFSETS in extensions:
            first: StartingOffsets = "latest" if spec.input.starting_offsets == "latest" else "earliest"
            source = KafkaSource(topic=spec.input.topic, starting_offsets=first,
                                 start_position=start.position if start is not None else None)
        return DeploymentCreate(
            name=f"{meta['namespace']}/{meta['name']}", type="stream",
            description=f"{text} {marker(meta['uid'], resolved.spec_hash)}",
            input=StreamInput(connection=resolved.input, source=source),
            output=StreamOutput(connection=resolved.output, target=KafkaTarget(
                topic=spec.output.topic, dead_letter_topic=spec.output.dead_letter_topic)),
            initial_status="STOPPED" if handover.created_stopped(declared, extensions) else None)

    def _create(self, wml: WML, body: Mapping[str, Any], spec: StreamingDeploymentSpec, resolved: Resolved,
                desired: Desired, start: handover.Start) -> tuple[Deployment, tuple[Event, ...]]:
        """Creates the deployment; the events that say where it starts and whether it ran before it stopped."""
        extensions = wml.extensions()
        create = self._body(body, spec, resolved, start, desired.state, extensions)
        self.resources.note_created(body["metadata"]["uid"])
        made = wml.create(resolved.model_id, create, resolved.spark)
        notes: list[Event] = []
        if start.reason:
            notes.append(("Warning" if start.warning else "Normal", start.reason, start.note))
        if desired.state == STOPPED and made.status != STOPPED:
            notes.append(("Warning", "StreamRanBriefly", "the server does not support creating a deployment "
                                                         "stopped: it runs from its creation until it is stopped"))
        return made, tuple(notes)

