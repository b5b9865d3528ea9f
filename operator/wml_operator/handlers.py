"""The only module with kopf decorators; each handler is a few lines over wml_operator.reconcile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from wml_operator import conditions, metrics, persistence
from wml_operator.kube import StatusWriter
from wml_operator.poller import Poller
from wml_operator.reconcile import Outcome, Transient
from wml_operator.runtime import Runtime
from wml_operator.settings import OperatorSettings
from wml_operator.spec import FINALIZER, GROUP, PLURAL, VERSION
from wml_operator.wml import HANDLER_THREADS

SETTINGS = OperatorSettings.from_env()
RUNTIME = Runtime(SETTINGS)
RESOURCE = (GROUP, VERSION, PLURAL)
STATUS = StatusWriter()
OBJECT_WORKERS = 2 * HANDLER_THREADS


# kopf logs every handler run at INFO. For the watch handlers that is one line per event (every Secret of the
# namespace, every status write) saying nothing: only their failures are worth a line.
ROUTINE = frozenset({"Handler 'secret_changed' succeeded.", "Handler 'track' succeeded."})


def _not_routine(record: logging.LogRecord) -> bool:
    return record.getMessage() not in ROUTINE


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # kopf's own bookkeeping under its own prefix: under ours, the progress of the handler `reconcile` would
    # land on (and misread) the user's `wmlstream.dev/reconcile` annotation.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=persistence.PREFIX)
    settings.persistence.diffbase_storage = persistence.StatusDiffBase()
    settings.execution.max_workers = HANDLER_THREADS
    # At most OBJECT_WORKERS resources in kopf's hands at once (a burst of 1,000 creates otherwise has 1,000
    # handler invocations waiting for the HANDLER_THREADS threads, each holding its body, patch and causes: about
    # 50 MB more at the peak, which Python keeps afterwards). Since a worker holds its place while it idles, it
    # goes after 1 s instead of kopf's 5 s; and retries after WML errors wait in the poller, not in a worker.
    settings.queueing.worker_limit = OBJECT_WORKERS
    settings.queueing.idle_timeout = 1.0
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    logging.getLogger("kopf.objects").addFilter(_not_routine)
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    RUNTIME.secrets.set_api(k8s.CoreV1Api())
    STATUS.set_api(k8s.CustomObjectsApi())
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
    """One pass, its outcome applied to `patch`. When WML is unavailable, the poller tries again after the
    backoff (or Retry-After): kopf would keep the resource's worker asleep for that long, one of the
    OBJECT_WORKERS, and write its retry count into an annotation each time. Only a deletion is retried by kopf,
    which keeps the finalizer meanwhile (the poller leaves resources being deleted alone)."""
    uid = body["metadata"]["uid"]
    try:
        with RUNTIME.passing(uid):
            outcome = RUNTIME.reconciler.run(body, deleting=deleting)
    except Transient as err:
        transient(err, body, patch)
        RUNTIME.ran(uid, retry_after=err.delay, generation=body["metadata"].get("generation"))
        metrics.RECONCILES.labels(trigger, "transient").inc()
        if deleting:
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


def poll_pass(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """A pass of the poller: the status to write, as a kopf handler would leave it in its patch."""
    patch = kopf.Patch()
    run("poll", kopf.Body(cast(kopf.RawBody, dict(body))), patch)
    return dict(patch.status) if patch.status else None


POLLER = Poller(RUNTIME, poll_pass, STATUS, concurrency=HANDLER_THREADS // 2)


@kopf.on.event(*RESOURCE)
async def track(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    POLLER.track(event.get("type"), body)


@kopf.on.startup()
async def start_polling(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    memo["poller"] = asyncio.create_task(POLLER.run(settings.execution.executor), name="poller")


@kopf.on.cleanup()
async def stop_polling(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("poller")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if POLLER.tasks:  # passes under way finish, and write what they found
        await asyncio.wait(list(POLLER.tasks), timeout=10)


@kopf.on.delete(*RESOURCE)
def delete(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    outcome = run("delete", body, patch, deleting=True)
    if outcome is not None and not outcome.finalized:
        raise kopf.TemporaryError(outcome.status.get("message") or "deletion is waiting", delay=15)
    RUNTIME.forget(body["metadata"]["uid"])


@kopf.on.event("", "v1", "secrets")
async def secret_changed(event: kopf.RawEvent, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> None:
    # In the event loop, like `track`, which keeps POLLER.users_of: no lock between them.
    waiting = POLLER.users_of(namespace or "", name)
    changed = RUNTIME.secrets.observe(event.get("type"), namespace or "", name, body)
    # A Secret that appears or changes wakes the resources that use it within one tick of the poller.
    if waiting and (changed or event.get("type") in ("ADDED", "MODIFIED")):
        for uid in waiting:
            RUNTIME.mark_dirty(uid)
