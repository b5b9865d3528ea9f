"""The kopf handlers, called as kopf calls them, with real kopf.Patch(), kopf.Body() and kopf.Memo() objects. Each
test makes an operator of its own (OperatorApp.build over Secrets from a dict and an in-memory WML): no
module-level state, no order between tests."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import kopf
import pytest

from tests.support import DictSecrets, MemoryWML
from tests.unit.test_reconcile import SECRETS, SPEC
from wml_api.errors import Unavailable
from wml_api.models import StatusDetails
from wml_operator import handlers
from wml_operator.app import OperatorApp
from wml_operator.login_copies import MemoryLogins
from wml_operator.resources import Resources
from wml_operator.settings import OperatorSettings

UID = "uid-1"
Event = tuple[str, str, str]


def age(resources: Resources, seconds: float) -> None:
    """As if the resource's last pass had run `seconds` earlier."""
    state = resources._state(UID)
    assert state is not None
    assert state.last_run is not None
    state.last_run -= seconds


class Operator:
    """An OperatorApp with a recorder of the events it posts, and the memo kopf hands to every handler."""

    def __init__(self, answer_status: str | None = "RUNNING") -> None:
        self.wml = MemoryWML(answer_status=answer_status)
        self.events: list[Event] = []
        self.secrets = {k: dict(v) for k, v in SECRETS.items()}
        self.logins = MemoryLogins()  # the copies of logins, which outlive the operator's memory
        self.app = OperatorApp.build(OperatorSettings(poll_fast_seconds=5.0, poll_slow_seconds=30.0),
                                     secrets=DictSecrets(self.secrets), wml=self.wml,
                                     post_event=lambda body, event: self.events.append(event),
                                     logins=self.logins)
        self.memo = kopf.Memo(app=self.app)
        self.status: dict[str, Any] = {}

    def body(self, generation: int = 1) -> kopf.Body:
        return kopf.Body({"apiVersion": "wmlstream.dev/v1alpha1", "kind": "StreamingDeployment",
                          "metadata": {"name": "t", "namespace": "ns", "uid": UID, "generation": generation},
                          "spec": json.loads(json.dumps(SPEC)), "status": dict(self.status)})

    def reconcile(self, reason: str = "create") -> kopf.Patch:
        patch = kopf.Patch()
        handlers.reconcile(body=self.body(), patch=patch, reason=reason, memo=self.memo)
        self.status.update({k: v for k, v in patch.status.items()})
        self.status = {k: v for k, v in self.status.items() if v is not None}
        return patch

    def reconciled_long_ago(self) -> Resources:
        """Seen by the watch, reconciled, and that past the steady poll interval."""
        self.track("ADDED")
        self.reconcile()
        age(self.app.resources, 31)
        return self.app.resources

    def track(self, event_type: str) -> None:
        asyncio.run(handlers.track(event={"type": event_type}, body=self.body(), memo=self.memo))


def test_status_is_written_into_kopfs_patch_once_and_only_when_changed() -> None:
    op = Operator()
    first = op.reconcile()
    assert first.status["wmlStatus"] == "RUNNING"
    assert "kopf" not in first.status  # kopf's own part is kopf's to write
    assert op.app.metrics.status_writes._value.get() == 1
    again = op.reconcile(reason="update")
    assert not again  # nothing changed: no write at all
    assert op.app.metrics.status_writes._value.get() == 1


def test_a_field_no_longer_reported_is_removed() -> None:
    op = Operator()
    op.reconcile()
    op.status["wmlState"] = "RUNNING"  # what an older version wrote: no longer part of the status
    patch = op.reconcile(reason="update")
    assert patch.status["wmlState"] is None
    assert patch.status["wmlStatus"] == "RUNNING"


def test_transient_errors_keep_ready_and_leave_the_retry_to_the_poller() -> None:
    op = Operator()
    op.reconcile()
    ready = next(c for c in op.status["conditions"] if c["type"] == "Ready")
    op.wml.fail["list"] = Unavailable("503", method="GET", path="/v3/x", status=503)
    patch = kopf.Patch()
    handlers.reconcile(body=op.body(generation=2), patch=patch, reason="update", memo=op.memo)  # no TemporaryError
    by_type = {c["type"]: c for c in patch.status["conditions"]}
    assert {k: by_type["Ready"][k] for k in ("status", "reason", "lastTransitionTime")} == {
        k: ready[k] for k in ("status", "reason", "lastTransitionTime")}
    assert by_type["Reconciling"]["reason"] == "WMLUnavailable"
    resources = op.app.resources
    kept = op.body(generation=2)
    assert not resources.due(UID, kept)  # during the backoff
    state = resources._state(UID)
    assert state is not None
    state.next_attempt = 0.0
    assert resources.due(UID, kept)  # right after it, whatever the poll interval


def test_a_deletion_that_cannot_reach_wml_is_retried_by_kopf() -> None:
    op = Operator()
    op.reconcile()
    op.wml.fail["list"] = Unavailable("connection refused", method="GET", path="/v3/x")
    with pytest.raises(kopf.TemporaryError) as retry:  # kopf keeps the finalizer and calls again
        handlers.delete(body=op.body(), patch=kopf.Patch(), memo=op.memo)
    assert retry.value.delay is not None
    assert 1.6 <= retry.value.delay <= 2.4
    assert op.wml.deployments  # nothing deleted yet


def test_after_a_restart_a_deletion_without_secrets_goes_through_the_kept_login() -> None:
    """Issue 15: the namespace was deleted while the operator was down; its Secrets went first."""
    op = Operator()
    op.reconcile()
    op.track("ADDED")
    assert [ep.url for ep in op.logins.kept(UID)] == ["http://wml.test"]
    op.secrets.clear()
    op.app.resources.forget(UID)  # a restarted operator: nothing in memory, the copy is in the cluster
    op.track("ADDED")
    handlers.delete(body=op.body(), patch=kopf.Patch(), memo=op.memo)
    assert op.wml.deployments == {}
    assert op.events[-1][1] == "Deleting"
    asyncio.run(handlers.track(event={"type": "DELETED"}, body=op.body(), memo=op.memo))
    assert op.logins.uids() == set()  # the copy went with the resource


def test_delete_keeps_the_finalizer_until_done_then_forgets_the_resource() -> None:
    op = Operator()
    op.reconcile()
    op.track("ADDED")
    op.secrets.clear()
    op.app.resources.forget(UID)  # as after a restart
    op.logins.drop(UID)  # and no copy of the login (made by an operator from before the copies)
    op.track("ADDED")
    with pytest.raises(kopf.TemporaryError):
        handlers.delete(body=op.body(), patch=kopf.Patch(), memo=op.memo)
    assert op.events[-1][1] == "CannotDelete"
    op.secrets.update({k: dict(v) for k, v in SECRETS.items()})  # the Secrets come back
    handlers.delete(body=op.body(), patch=kopf.Patch(), memo=op.memo)
    assert op.wml.deployments == {}
    assert op.app.resources.sizes() == {"resources": 0, "secret_users": 0}


def test_every_per_resource_table_is_empty_after_create_and_delete() -> None:
    """Section 2 of issue 13: the operator's memory must not grow with every resource ever created."""
    op = Operator()
    for i in range(50):
        uid = f"churn-{i}"
        body = kopf.Body({"apiVersion": "wmlstream.dev/v1alpha1", "kind": "StreamingDeployment",
                          "metadata": {"name": f"t{i}", "namespace": "ns", "uid": uid, "generation": 1},
                          "spec": json.loads(json.dumps(SPEC)), "status": {}})
        asyncio.run(handlers.track(event={"type": "ADDED"}, body=body, memo=op.memo))
        patch = kopf.Patch()
        handlers.reconcile(body=body, patch=patch, reason="create", memo=op.memo)
        done = kopf.Body({**body, "status": dict(patch.status)})
        handlers.delete(body=done, patch=kopf.Patch(), memo=op.memo)
        asyncio.run(handlers.track(event={"type": "DELETED"}, body=done, memo=op.memo))
    assert op.app.resources.sizes() == {"resources": 0, "secret_users": 0}
    assert op.wml.deployments == {}
    gauge = {s.labels["wml_status"]: s.value for s in op.app.metrics.resources.collect()[0].samples}
    assert set(gauge.values()) == {0}


def test_a_secret_change_wakes_the_resources_that_read_it() -> None:
    """The metadata-only watch (secret_watch) feeds the store: a referenced Secret's new resourceVersion wakes
    its resources, an unreferenced one's wakes nobody and is not kept."""
    op = Operator()
    op.reconcile()
    op.track("MODIFIED")
    resources = op.app.resources
    state = resources._state(UID)
    assert state is not None
    assert not state.dirty
    op.app.secrets.event("MODIFIED", "ns", "kafka", "7")
    assert state.dirty
    state.dirty = False
    op.app.secrets.event("ADDED", "ns", "unrelated", "8")
    op.app.secrets.event("MODIFIED", "other", "kafka", "9")
    assert not state.dirty
    assert op.app.secrets.held() == 0


def test_a_resource_is_left_to_its_create_or_resume_handler_first() -> None:
    """No pass in this process yet: kopf's create handler (a new resource) or resume handler (one found at
    start-up), maybe still queued behind a burst of others, does the first pass; a poll beside it would do the
    same work twice."""
    op = Operator()
    op.track("ADDED")
    resources = op.app.resources
    assert not resources.due(UID, op.body())
    resources.mark_dirty(UID)  # a Secret it reads changed meanwhile: still the handler's
    assert not resources.due(UID, op.body())
    op.reconcile()
    age(resources, 31)
    assert resources.due(UID, op.body())


def test_a_spec_change_is_left_to_its_update_handler() -> None:
    op = Operator()
    resources = op.reconciled_long_ago()
    assert not resources.due(UID, op.body(generation=2))  # generation 2: not reconciled yet
    assert resources.due(UID, op.body(generation=1))


def test_no_poll_while_another_pass_of_the_resource_runs() -> None:
    op = Operator()
    resources = op.reconciled_long_ago()
    assert resources.due(UID, op.body())
    with resources.passing(UID):  # a change handler's pass: its outcome (backoff, Retry-After) decides
        assert not resources.due(UID, op.body())
    assert resources.due(UID, op.body())


def test_stalled_resources_are_not_polled_fast() -> None:
    op = Operator()
    op.track("ADDED")
    op.secrets.pop("kafka")
    op.reconcile()
    assert any(c["type"] == "Stalled" for c in op.status["conditions"])
    resources = op.app.resources
    age(resources, 6)  # one fast interval later: a stalled resource waits for the steady interval
    assert not resources.due(UID, op.body())
    resources.mark_dirty(UID)  # ... or for a Secret it reads to change
    assert resources.due(UID, op.body())


def test_a_secret_that_appears_while_the_pass_that_missed_it_runs_wakes_the_resource() -> None:
    """`kubectl apply` of the resource before its Secrets: the create handler's pass reads no Secret, and the
    Secret's ADDED event arrives before that pass ends. Its wake must outlast the pass, or the resource stays
    Stalled for good (found by test_deletion_kill[prune] on a loaded CI machine)."""
    op = Operator()
    op.track("ADDED")
    kafka = op.secrets.pop("kafka")
    resources = op.app.resources
    reader = op.app.reconciler.secrets
    read = reader.read

    def read_then_secret_appears(namespace: str, name: str) -> Any:
        found = read(namespace, name)
        if name == "kafka" and "kafka" not in op.secrets:
            op.secrets["kafka"] = kafka
            resources.mark_dirty_users(namespace, name)  # what the Secret's ADDED event does
        return found

    reader.read = read_then_secret_appears  # type: ignore[method-assign]
    op.reconcile()
    assert any(c["type"] == "Stalled" and c["status"] == "True" for c in op.status["conditions"])
    assert resources.due(UID, op.body())  # at once, not at the steady interval: the wake was not lost
    op.reconcile("poll")
    assert not any(c["type"] == "Stalled" and c["status"] == "True" for c in op.status["conditions"])
    assert not resources.due(UID, op.body())  # and that pass, which saw the Secret, took the wake


def test_routine_handler_successes_are_not_logged() -> None:
    def record(message: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, message, args, None)

    assert not handlers._not_routine(record("Handler %r succeeded.", "track"))
    assert handlers._not_routine(record("Handler %r succeeded.", "reconcile"))
    assert handlers._not_routine(record("Handler %r failed with an exception. Will retry.", "track"))


def test_the_lag_wml_reports_is_a_metric_per_resource_until_the_resource_goes() -> None:
    op = Operator()
    op.reconcile()
    did = op.status["deploymentId"]
    dep = op.wml.deployments[did]
    op.wml.deployments[did] = dep.model_copy(update={"entity": dep.entity.model_copy(
        update={"status_details": StatusDetails(lag=17)})})
    op.reconcile("update")
    samples = {(s.labels["namespace"], s.labels["name"]): s.value
               for s in op.app.metrics.stream_lag.collect()[0].samples}
    assert samples == {("ns", "t"): 17}
    assert op.status["lag"] == 17
    handlers.delete(body=op.body(), patch=kopf.Patch(), memo=op.memo)
    assert op.app.metrics.stream_lag.collect()[0].samples == []
