"""The operator's objects, made once at start-up (`OperatorApp.build`) and handed to kopf's handlers in its
memo: no module-level state, so tests make an app of their own for each case."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from wml_operator.kube import SecretStore, StatusWriter, list_resources, watched
from wml_operator.login_copies import Logins, SecretLogins
from wml_operator.metrics import Metrics
from wml_operator.model_refs import KubeModels, read_model
from wml_operator.poller import Poller
from wml_operator.ports import Connector
from wml_operator.published.kube import KubeReads
from wml_operator.published.run import Pass, Publisher
from wml_operator.published.source import sweep_leftovers
from wml_operator.published.spec import PLURAL as MODELS
from wml_operator.reconcile import Reconciler
from wml_operator.resources import Resources
from wml_operator.secret_watch import SecretWatch, scopes
from wml_operator.secrets import SecretReader
from wml_operator.settings import OperatorSettings
from wml_operator.spec import PLURAL
from wml_operator.status import Event, Outcome
from wml_operator.wml import HANDLER_THREADS, ClientPool, Instances

PostEvent = Callable[[Mapping[str, Any], Event], None]
MODEL_QUIET_SECONDS = 5.0  # after a PublishedModel's pass, its timer waits this long (kopf writes the status)
log = logging.getLogger(__name__)


def post_kopf_event(body: Mapping[str, Any], event: Event) -> None:
    kind, reason, message = event
    obj = body if isinstance(body, kopf.Body) else kopf.Body(cast(kopf.RawBody, dict(body)))
    kopf.event(obj, type=kind, reason=reason, message=message)


@dataclass
class OperatorApp:
    settings: OperatorSettings
    metrics: Metrics
    resources: Resources
    secrets: SecretStore
    wml: Connector
    reconciler: Reconciler
    status: StatusWriter
    post_event: PostEvent
    logins: Logins
    models: Publisher
    kube_reads: KubeReads
    poller: Poller = field(init=False)
    secret_watch: SecretWatch | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.poller = Poller(self.resources, self.poll, concurrency=HANDLER_THREADS // 2)

    @classmethod
    def build(cls, settings: OperatorSettings, *, secrets: SecretReader | None = None,
              wml: Connector | None = None, post_event: PostEvent = post_kopf_event,
              logins: Logins | None = None) -> OperatorApp:
        metrics = Metrics()
        store = SecretStore(on_read=metrics.secret_reads.inc, on_event=metrics.secret_events.inc)
        metrics.secrets_held.set_function(store.held)
        default_creds, default_ca = settings.default_secrets
        resources = Resources(settings.poll_fast_seconds, settings.poll_slow_seconds,
                              on_status=metrics.status_changed, on_release=store.release,
                              default_secret=default_creds, default_ca=default_ca)

        def wake(namespace: str, name: str) -> None:
            resources.mark_dirty_users(namespace, name)
            models.secret_changed(namespace, name)

        store.wanted = lambda namespace, name: resources.referenced(namespace, name) or \
            models.references(namespace, name)
        store.wake = wake
        logins = logins if logins is not None else SecretLogins(settings.pod_namespace)
        wml = wml or Instances(timeout=settings.wml_timeout_seconds, on_response=metrics.observe_request)
        reconciler = Reconciler(secrets or store, wml, resources, settings.defaults, logins, KubeModels())
        status = StatusWriter(on_write=metrics.status_writes.inc)
        kube_reads = KubeReads()
        pool = wml.pool if isinstance(wml, Instances) else ClientPool(timeout=settings.wml_timeout_seconds)
        models = Publisher(secrets or store, pool.client, kube_reads, settings.defaults, logins,
                           settings.model_max_bytes)
        models.default_secret, models.default_ca = default_creds, default_ca
        models.on_release = lambda keys: store.release([k for k in keys if not resources.referenced(*k)])
        return cls(settings, metrics, resources, store, wml, reconciler, status, post_event, logins, models,
                   kube_reads)

    def connect(self, core: k8s.CoreV1Api, custom: k8s.CustomObjectsApi) -> None:
        """The Kubernetes API, once at start-up: the Secret store and the copies of logins use it, and the
        metadata-only watch of Secrets starts (wml_operator.secret_watch)."""
        if self.secret_watch is not None:  # kopf retried a start-up that failed after this: connected already
            return
        left = sweep_leftovers()
        if left:
            log.info("deleted %d model downloads a previous operator left in the temporary folder", left)
        self.secrets.set_api(core)
        self.status.set_api(custom)
        if isinstance(self.reconciler.models, KubeModels):
            self.reconciler.models.set_getter(lambda namespace, name: read_model(custom, namespace, name))
        self.kube_reads.set_api(core, custom)
        if isinstance(self.logins, SecretLogins):
            self.logins.set_api(core)
            try:
                self.logins.load()
            except ApiException as exc:
                # Not fatal: each copy is then read when a deletion needs it, and a pass that cannot write one
                # says so on its resource (Reconciling/LoginNotKept).
                log.error("cannot list the copies of deletion logins in namespace %s: %s %s", self.logins.namespace,
                          exc.status, exc.reason)
        # The default Secrets' namespaces are watched too, also when they are not among the watched namespaces.
        own = sorted({key[0] for key in self.settings.default_secrets if key is not None})
        self.secret_watch = SecretWatch(core, self.secrets, scopes(self.settings.namespaces, own))
        self.secrets.watching = self.secret_watch.healthy
        self.secret_watch.start()

    def reconcile(self, trigger: str, body: Mapping[str, Any], patch: kopf.Patch | None = None, *,
                  deleting: bool = False) -> Outcome:
        """One pass: reconciled, its events sent, its status written (into kopf's `patch` when a handler runs
        it). When WML could not be reached, the poller tries again after the backoff (or Retry-After)."""
        meta = body["metadata"]
        uid = meta["uid"]
        outcome = self.reconciler.run(body, deleting=deleting)
        for event in outcome.events:
            self.post_event(body, event)
            if event[0] == "Warning":
                self.metrics.errors.labels(event[1]).inc()
        if outcome.retry_after is not None:
            self.metrics.errors.labels("WMLUnavailable").inc()
        else:
            self.resources.set_wml_status(uid, outcome.status.get("wmlStatus") or "NONE")
            self.metrics.set_lag(meta["namespace"], meta["name"], None if deleting else outcome.status.get("lag"))
        self.resources.ran(uid, retry_after=outcome.retry_after, generation=meta.get("generation"))
        self.status.write(body, outcome.status, patch)
        self.metrics.reconciles.labels(trigger, "ok" if outcome.retry_after is None else "transient").inc()
        return outcome

    def published_model_seen(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A PublishedModel changed (or went): the StreamingDeployments whose modelRef names it are reconciled
        within one tick of the poller, and see its new version or why it has none."""
        if isinstance(self.reconciler.models, KubeModels):
            self.reconciler.models.seen(event_type, body)
        meta = body.get("metadata") or {}
        for uid in self.resources.model_users(str(meta.get("namespace")), str(meta.get("name"))):
            self.resources.mark_dirty(uid)

    def forget(self, body: Mapping[str, Any]) -> None:
        """The resource is done with: what is kept for it in memory goes, its metrics series too."""
        meta = body["metadata"]
        self.resources.forget(meta["uid"])
        self.metrics.set_lag(meta["namespace"], meta["name"], None)

    def gone(self, body: Mapping[str, Any]) -> None:
        """The resource no longer exists (its finalizer is off): the copy of its logins goes too. Not earlier: an
        operator killed between deleting the copy and removing the finalizer could not delete it again."""
        self.forget(body)
        self.logins.drop(body["metadata"]["uid"])

    def sweep(self) -> list[str]:
        """Deletes the copies of logins whose resource is gone (the operator was down when it went)."""
        if not isinstance(self.logins, SecretLogins) or self.status.api is None:
            return []
        api = self.status.api
        namespaces = self.settings.namespaces

        def live() -> set[str]:
            # Both kinds keep copies of logins: a PublishedModel's must not be swept either.
            return {item["metadata"]["uid"] for plural in (PLURAL, MODELS)
                    for item in list_resources(api, namespaces, plural)}

        return self.logins.sweep(live, lambda namespace: watched(namespace, namespaces))

    # --- PublishedModel ------------------------------------------------------------------------------------

    def reconcile_model(self, trigger: str, body: Mapping[str, Any], patch: kopf.Patch | None = None) -> Pass:
        """One pass of a PublishedModel: fetched, published if changed, its status written into `patch`. After a
        transient error the timer (model_tick) runs it again when the backoff is over."""
        outcome = self.models.run(body)
        self._model_outcome(trigger, body, outcome, patch)
        return outcome

    def model_tick(self, body: Mapping[str, Any], patch: kopf.Patch | None = None) -> Pass | None:
        """The timer: a pass when one is due (a backoff over, a source to look at again), else nothing."""
        meta = body["metadata"]
        if meta.get("deletionTimestamp") or not self.models.due(body):
            return None
        outcome = self.models.run_if_free(body, quiet=MODEL_QUIET_SECONDS)
        if outcome is not None:
            self._model_outcome("timer", body, outcome, patch)
        return outcome

    def delete_model(self, body: Mapping[str, Any], patch: kopf.Patch | None = None) -> Pass:
        """Deletion: waits while StreamingDeployments reference it, then deletes the model (policy Delete)."""
        outcome = self.models.delete(body)
        self._model_outcome("delete", body, outcome, patch)
        if outcome.finalized:
            self.models.forget(body["metadata"]["uid"])
        return outcome

    def model_gone(self, body: Mapping[str, Any]) -> None:
        """The PublishedModel no longer exists: its schedule and the copy of its login go."""
        self.models.gone(body["metadata"]["uid"])
        self.logins.drop(body["metadata"]["uid"])

    def _model_outcome(self, trigger: str, body: Mapping[str, Any], outcome: Pass, patch: kopf.Patch | None) -> None:
        for event in outcome.events:
            self.post_event(body, event)
            if event[0] == "Warning":
                self.metrics.errors.labels(event[1]).inc()
        self.status.write(body, outcome.status, patch)
        self.metrics.reconciles.labels(f"model-{trigger}",
                                       "ok" if outcome.retry_after is None else "transient").inc()

    def poll(self, body: Mapping[str, Any]) -> None:
        """A pass of the poller (poller.Pass)."""
        self.reconcile("poll", body)

    def close(self) -> None:
        if self.secret_watch is not None:
            self.secret_watch.stop()
        closing = getattr(self.wml, "close", None)
        if callable(closing):
            closing()
