"""The only module with kopf decorators; each handler is a few lines over wml_operator.reconcile."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from wml_operator import conditions, metrics
from wml_operator.reconcile import Outcome, Transient
from wml_operator.runtime import Runtime
from wml_operator.secrets import referenced_secrets
from wml_operator.settings import OperatorSettings
from wml_operator.spec import FINALIZER, GROUP, PLURAL, VERSION, parse_spec
from wml_operator.wml import HANDLER_THREADS

SETTINGS = OperatorSettings.from_env()
RUNTIME = Runtime(SETTINGS)
RESOURCE = (GROUP, VERSION, PLURAL)


# kopf logs every handler run at INFO. For the timer and the Secret watch that is one line per resource per
# poll (1,000 resources at 5 s: 200 lines a second) saying nothing: only their failures are worth a line.
ROUTINE = frozenset({"Timer 'poll' succeeded.", "Handler 'secret_changed' succeeded."})


def _not_routine(record: logging.LogRecord) -> bool:
    return record.getMessage() not in ROUTINE


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # kopf's own bookkeeping under its own prefix: under ours, the progress of the handler `reconcile` would
    # land on (and misread) the user's `wmlstream.dev/reconcile` annotation.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=f"kopf.{GROUP}")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=f"kopf.{GROUP}", key="last-handled-configuration")
    settings.execution.max_workers = HANDLER_THREADS
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    logging.getLogger("kopf.objects").addFilter(_not_routine)
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    RUNTIME.secrets.set_api(k8s.CoreV1Api())
    if SETTINGS.metrics_address:
        metrics.serve(SETTINGS.metrics_address)
    logger.info("wml-stream-operator ready: namespaces=%s, poll %.0f s changing / %.0f s steady",
                ",".join(SETTINGS.namespaces) or "all", SETTINGS.poll_fast, SETTINGS.poll_slow)


def apply(outcome: Outcome, body: kopf.Body, patch: kopf.Patch) -> None:
    """Events, then status written once, and only when it changed."""
    for kind, reason, message in outcome.events:
        kopf.event(body, type=kind, reason=reason, message=message)
        if kind == "Warning":
            metrics.ERRORS.labels(reason).inc()
    old = dict(body.get("status") or {})
    # Compared whole, not by lastSyncTime: that has 1 s resolution, and a change made in the same second as
    # the last write (a re-create right after a flip) would not be written.
    if "lastSyncTime" in outcome.status and outcome.status != {k: v for k, v in old.items() if k != "kopf"}:
        patch.status.update({k: None for k in old if k not in outcome.status and k != "kopf"})
        patch.status.update(outcome.status)
        metrics.STATUS_WRITES.inc()
    metrics.set_resource_status(body["metadata"]["uid"], outcome.status.get("wmlStatus") or "NONE")


def transient(err: Transient, body: kopf.Body, patch: kopf.Patch) -> None:
    """Say so on the resource (Reconciling, with WML's answer) and keep Ready as it was: a blip of the API
    is not an outage of the stream."""
    status = dict(body.get("status") or {})
    previous = status.get("conditions", [])
    was_ready = any(c.get("type") == conditions.READY and c.get("status") == "True" for c in previous)
    message = f"WML unavailable, retrying in {err.delay:.0f} s: {err}"
    new = conditions.compute(previous, ready=was_ready, reconciling=True, stalled=False, reason="WMLUnavailable",
                             message=message, generation=body["metadata"].get("generation"))
    if not conditions.same_ignoring_time(new, previous):
        patch.status["conditions"] = new
        patch.status["lastSyncTime"] = conditions.now_rfc3339()
    metrics.ERRORS.labels("WMLUnavailable").inc()


def run(trigger: str, body: kopf.Body, patch: kopf.Patch, *, deleting: bool = False) -> Outcome | None:
    uid = body["metadata"]["uid"]
    try:
        with RUNTIME.passing(uid):
            outcome = RUNTIME.reconciler.run(body, deleting=deleting)
    except Transient as err:
        transient(err, body, patch)
        RUNTIME.ran(uid, retry_after=err.delay, generation=body["metadata"].get("generation"))
        metrics.RECONCILES.labels(trigger, "transient").inc()
        if trigger != "timer":
            raise kopf.TemporaryError(str(err), delay=err.delay) from None
        return None
    RUNTIME.ran(uid, generation=body["metadata"].get("generation"))
    apply(outcome, body, patch)
    metrics.RECONCILES.labels(trigger, "ok").inc()
    return outcome


@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
@kopf.on.resume(*RESOURCE)
def reconcile(body: kopf.Body, patch: kopf.Patch, reason: str, **_: Any) -> None:
    run(str(reason), body, patch)


@kopf.timer(*RESOURCE, interval=SETTINGS.poll_fast, initial_delay=SETTINGS.poll_fast)
def poll(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    if RUNTIME.due(body["metadata"]["uid"], body):
        run("timer", body, patch)


@kopf.on.delete(*RESOURCE)
def delete(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    outcome = run("delete", body, patch, deleting=True)
    if outcome is not None and not outcome.finalized:
        raise kopf.TemporaryError(outcome.status.get("message") or "deletion is waiting", delay=15)
    RUNTIME.forget(body["metadata"]["uid"])


@kopf.index(*RESOURCE)
def sdeps_by_secret(namespace: str | None, spec: kopf.Spec, uid: str, **_: Any) -> dict[tuple[str, str], str]:
    try:
        names = referenced_secrets(parse_spec(dict(spec)))
    except ValueError:
        return {}
    return {(namespace or "", name): uid for name in names}


@kopf.on.event("", "v1", "secrets")
def secret_changed(event: kopf.RawEvent, namespace: str | None, name: str, body: kopf.Body, **kwargs: Any) -> None:
    index: kopf.Index[tuple[str, str], str] = kwargs["sdeps_by_secret"]
    waiting: list[str] = list(index.get((namespace or "", name), []))
    changed = RUNTIME.secrets.observe(event.get("type"), namespace or "", name, body)
    # A Secret that appears or changes wakes the resources that use it within one timer tick.
    if waiting and (changed or event.get("type") in ("ADDED", "MODIFIED")):
        for uid in waiting:
            RUNTIME.mark_dirty(uid)
