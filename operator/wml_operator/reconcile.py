"""One reconciliation pass, carried out: spec -> Secrets -> WML instance -> look -> plan -> act -> status.

Every decision is wml_operator.plan's and the status is wml_operator.status's; this module only does the I/O
they call for, through two small interfaces (`WML`, `Connector`), so that tests/unit drives it with an
in-memory WML and the integration tests with the real service.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from wml_api import errors as wml_errors
from wml_api.models import (
    Deployment,
    DeploymentCreate,
    KafkaSource,
    KafkaTarget,
    SparkServiceInstance,
    StreamInput,
    StreamOutput,
)
from wml_api.wire import describe_validation_error
from wml_operator import plan as planning
from wml_operator.plan import Desired, Do, Last, Observed, View
from wml_operator.resources import Resources
from wml_operator.secrets import Defaults, Endpoint, Resolved, SecretReader, SpecProblem, resolve
from wml_operator.spec import (
    ANNOTATION_DEPLOYMENT_ID,
    ANNOTATION_RECONCILE,
    StreamingDeploymentSpec,
    parse_spec,
)
from wml_operator.status import Found, Outcome, Result, last_of, outcome
from wml_operator.wml import Listing, built_from, marker


class WML(Protocol):
    """One WML instance, as a pass uses it."""

    def listing(self, max_age: float) -> Listing:
        """The instance's deployments, from a list begun at most max_age seconds ago."""

    def create(self, model_id: str, body: DeploymentCreate, spark: SparkServiceInstance) -> Deployment: ...

    def set_state(self, model_id: str, deployment_id: str, value: str, spark: SparkServiceInstance) -> Deployment:
        """PATCH the stream's status, then the deployment as WML shows it after that."""

    def delete(self, deployment_id: str) -> None:
        """Deleted, or gone already."""


class Connector(Protocol):
    def instance(self, endpoint: Endpoint) -> WML: ...


def _observed(found: Deployment | None) -> Observed | None:
    return Observed(found.id, found.status, found.failure_message, built_from(found)) if found else None


def _found(deployment: Deployment | None) -> Found | None:
    if deployment is None:
        return None
    return Found(deployment.id, deployment.metadata.url, deployment.status, built_from(deployment))


def look(listing: Listing, target_id: str | None, uid: str) -> tuple[Deployment | None, tuple[str, ...]]:
    """The resource's deployment (the one its status or adoption names, else the first with its marker), and
    the other deployments carrying its marker."""
    found = listing.by_id.get(target_id) if target_id else None
    owned = listing.owned(uid)
    if found is None and owned:
        found = owned[0]
    return found, tuple(d.id for d in owned if found is None or d.id != found.id)


class Reconciler:
    def __init__(self, secrets: SecretReader, wml: Connector, resources: Resources, defaults: Defaults) -> None:
        self.secrets = secrets
        self.wml = wml
        self.resources = resources
        self.defaults = defaults

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
        spec: StreamingDeploymentSpec | None = None
        try:
            try:
                spec = parse_spec(body.get("spec"))
                resolved = resolve(self.secrets, namespace, spec, self.defaults)
            except ValidationError as exc:
                return self._unresolved(uid, deleting, last, "InvalidSpec", describe_validation_error(exc, "spec"))
            except SpecProblem as problem:
                return self._unresolved(uid, deleting, last, problem.reason, problem.message)
            self.resources.remember(uid, resolved.endpoint)
            desired = Desired(state=str(spec.state), spec_hash=resolved.spec_hash,
                              restart_policy=str(spec.restart_policy),
                              paused=annotations.get(ANNOTATION_RECONCILE) == "paused",
                              adopt_id=annotations.get(ANNOTATION_DEPLOYMENT_ID) or None, deleting=deleting,
                              deletion_policy=str(spec.deletion_policy))
            result = self._act(body, spec, resolved, desired, last)
            self.resources.reached(uid)
            return result
        except wml_errors.WMLError as err:
            if not err.transient:
                self.resources.reached(uid)
                refused = planning.plan_refused(err, spec.model_id if spec else "?")
                return Result(refused, refused, deleting=deleting)
            attempts = 0 if isinstance(err, wml_errors.HeldBack) else self.resources.failed(uid)
            delay = planning.retry_delay(attempts, err.retry_after, held_back=isinstance(err, wml_errors.HeldBack),
                                         jitter=random.random())  # noqa: S311 - jitter, not crypto
            retry = planning.plan_transient(err, delay)
            return Result(retry, retry, deleting=deleting)

    def _unresolved(self, uid: str, deleting: bool, last: Last, reason: str, message: str) -> Result:
        remembered = self.resources.endpoint(uid)
        action = planning.plan_unresolved(deleting, last, remembered is not None, reason, message)
        if action.do == Do.DELETE and remembered is not None and last.deployment_id:
            self.wml.instance(remembered).delete(last.deployment_id)
        return Result(action, action, deleting=deleting)

    def _act(self, body: Mapping[str, Any], spec: StreamingDeploymentSpec, resolved: Resolved, desired: Desired,
             last: Last) -> Result:
        uid = body["metadata"]["uid"]
        wml = self.wml.instance(resolved.endpoint)
        now = time.time()
        target = desired.adopt_id or last.deployment_id
        found, extras = look(wml.listing(self.resources.poll_interval(body)), target, uid)
        action = planning.plan(desired, View(_observed(found), extras, fresh=False,
                                             made_here=self.resources.made_here(uid)), last, now)
        if action.do == Do.LOOK_AGAIN:
            found, extras = look(wml.listing(0), target, uid)
            action = planning.plan(desired, View(_observed(found), extras), last, now)
        model_id = (found.model_id if found else None) or spec.model_id
        created = None
        if action.do in (Do.CREATE, Do.RECREATE):
            if action.do == Do.RECREATE and found is not None:
                wml.delete(found.id)
            found = self._create(wml, body, spec, resolved)
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
        return Result(action, verdict, found=_found(found), spec_hash=resolved.spec_hash,
                      adopting=bool(desired.adopt_id), created=created, extras_deleted=action.extras,
                      restarted_at=now if action.do == Do.RESTART else None, deleting=desired.deleting)

    def _create(self, wml: WML, body: Mapping[str, Any], spec: StreamingDeploymentSpec,
                resolved: Resolved) -> Deployment:
        meta = body["metadata"]
        text = spec.description or f"StreamingDeployment {meta['namespace']}/{meta['name']}"
        create = DeploymentCreate(
            name=f"{meta['namespace']}/{meta['name']}", type="stream",
            description=f"{text} {marker(meta['uid'], resolved.spec_hash)}",
            input=StreamInput(connection=resolved.input, source=KafkaSource(topic=spec.input.topic)),
            output=StreamOutput(connection=resolved.output, target=KafkaTarget(topic=spec.output.topic)))
        self.resources.note_created(meta["uid"])
        return wml.create(spec.model_id, create, resolved.spark)


