"""The only module with kopf decorators; each handler is a few lines over wml_operator.app.OperatorApp, which
`python -m wml_operator` builds at start-up and hands over in kopf's memo."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from wml_operator import kopf_fixes, persistence
from wml_operator.app import OperatorApp
from wml_operator.published.spec import PLURAL as MODELS
from wml_operator.settings import OperatorSettings
from wml_operator.spec import FINALIZER, GROUP, PLURAL, VERSION
from wml_operator.wml import HANDLER_THREADS

kopf_fixes.serve_terminating_namespaces()

RESOURCE = (GROUP, VERSION, PLURAL)
OBJECT_WORKERS = 2 * HANDLER_THREADS
RETRY_DELETE_SECONDS = 15.0

# kopf logs every handler run at INFO. For the watch handler that is one line per event (every status write)
# saying nothing: only its failures are worth a line.
ROUTINE = frozenset({"Handler 'track' succeeded.", "Handler 'model_event' succeeded.",
                     "Timer 'check_model' succeeded."})


def _not_routine(record: logging.LogRecord) -> bool:
    return record.getMessage() not in ROUTINE


def app_of(memo: kopf.Memo) -> OperatorApp:
    return cast(OperatorApp, memo["app"])


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo,
              logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    if "app" not in memo:  # run by `kopf run` rather than `python -m wml_operator`
        memo["app"] = OperatorApp.build(OperatorSettings())
    app = app_of(memo)
    settings.persistence.finalizer = FINALIZER
    # kopf's own bookkeeping under its own prefix: under ours, the progress of the handler `reconcile` would
    # land on (and misread) the user's `wmlstream.dev/reconcile` annotation.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=persistence.PREFIX)
    settings.persistence.diffbase_storage = persistence.StatusDiffBase()
    settings.execution.max_workers = HANDLER_THREADS
    # At most OBJECT_WORKERS resources in kopf's hands at once: otherwise a burst of creates has one handler
    # invocation per resource waiting for the HANDLER_THREADS threads, each holding its body, patch and causes,
    # memory that Python keeps afterwards. Since a worker holds its place while it idles, it goes after 1 s
    # instead of kopf's 5 s; and retries after WML errors wait in the poller, not in a worker.
    settings.queueing.worker_limit = OBJECT_WORKERS
    settings.queueing.idle_timeout = 1.0
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    logging.getLogger("kopf.objects").addFilter(_not_routine)
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    app.connect(k8s.CoreV1Api(), k8s.CustomObjectsApi())
    if app.settings.metrics_address:
        app.metrics.serve(app.settings.metrics_address)
    logger.info("wml-stream-operator ready: namespaces=%s, poll %.0f s changing / %.0f s steady",
                ",".join(app.settings.namespaces) or "all", app.settings.poll_fast_seconds,
                app.settings.poll_slow_seconds)


@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
@kopf.on.resume(*RESOURCE)
def reconcile(body: kopf.Body, patch: kopf.Patch, reason: str, memo: kopf.Memo, **_: Any) -> None:
    app_of(memo).reconcile(str(reason), body, patch)


@kopf.on.delete(*RESOURCE)
def delete(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """kopf keeps the finalizer, and calls again, until the pass says the deletion is done. Only deletions are
    retried by kopf: the poller leaves resources being deleted alone."""
    app = app_of(memo)
    outcome = app.reconcile("delete", body, patch, deleting=True)
    if outcome.retry_after is not None:
        raise kopf.TemporaryError(str(outcome.status.get("message") or "WML unavailable"), delay=outcome.retry_after)
    if not outcome.finalized:
        raise kopf.TemporaryError(str(outcome.status.get("message") or "deletion is waiting"),
                                  delay=RETRY_DELETE_SECONDS)
    app.forget(body)


@kopf.on.event(*RESOURCE)
async def track(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    app = app_of(memo)
    app.poller.seen()
    app.resources.track(event.get("type"), body)
    if event.get("type") == "DELETED":
        # Off the event loop: it deletes the copy of the resource's logins through the (blocking) API client.
        await asyncio.get_running_loop().run_in_executor(None, app.gone, body)


# --- PublishedModel: passes in kopf's handlers, a timer for backoff and for sources looked at again ------------

MODEL = (GROUP, VERSION, MODELS)
MODEL_TICK_SECONDS = 5.0


@kopf.on.create(*MODEL)
@kopf.on.update(*MODEL)
@kopf.on.resume(*MODEL)
def reconcile_model(body: kopf.Body, patch: kopf.Patch, reason: str, memo: kopf.Memo, **_: Any) -> None:
    app_of(memo).reconcile_model(str(reason), body, patch)


@kopf.timer(*MODEL, interval=MODEL_TICK_SECONDS, initial_delay=MODEL_TICK_SECONDS, sharp=False)
def check_model(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    app_of(memo).model_tick(body, patch)


@kopf.on.delete(*MODEL)
def delete_model(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    outcome = app_of(memo).delete_model(body, patch)
    if not outcome.finalized:
        raise kopf.TemporaryError(str(outcome.status.get("message") or "deletion is waiting"),
                                  delay=outcome.retry_after or RETRY_DELETE_SECONDS)


@kopf.on.event(*MODEL)
async def model_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    app = app_of(memo)
    app.published_model_seen(event.get("type"), body)  # memory only: no I/O on the event loop
    if event.get("type") == "DELETED":
        await asyncio.get_running_loop().run_in_executor(None, app.model_gone, body)


# Secrets are not watched through kopf, which would list and hold every Secret's data: wml_operator.secret_watch
# watches their metadata, and wakes the resources whose Secrets changed (OperatorApp.connect starts it).


async def sweep_login_copies(app: OperatorApp, every: float) -> None:
    """At start-up, then every `every` seconds: copies of logins whose resource went while no operator ran."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            gone = await loop.run_in_executor(None, app.sweep)
            if gone:
                logging.getLogger(__name__).info("deleted %d copies of logins of resources that are gone",
                                                 len(gone))
        except Exception as exc:  # the next sweep tries again
            # The status and reason only: an API error's text carries the response's headers and body.
            logging.getLogger(__name__).warning("sweep of the copies of logins failed: %s %s", type(exc).__name__,
                                                getattr(exc, "status", "") or "")
        await asyncio.sleep(every)


@kopf.on.startup()
async def start_polling(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    app = app_of(memo)
    memo["poller_task"] = asyncio.create_task(app.poller.run(settings.execution.executor), name="poller")
    memo["sweep_task"] = asyncio.create_task(sweep_login_copies(app, app.settings.sweep_seconds),
                                             name="sweep-login-copies")


@kopf.on.cleanup()
async def stop_polling(memo: kopf.Memo, **_: Any) -> None:
    app = app_of(memo)
    sweep = memo.get("sweep_task")
    if sweep is not None:
        sweep.cancel()
    task = memo.get("poller_task")
    if task is not None:
        await app.poller.stop(task)
    app.close()
