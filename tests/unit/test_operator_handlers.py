"""The kopf handlers, called as kopf calls them, with real kopf.Patch() and kopf.Body() objects."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest

from wml_operator import handlers
from wml_operator.reconcile import Outcome, Transient


def make_body(status: dict[str, Any] | None = None) -> kopf.Body:
    return kopf.Body({"apiVersion": "wmlstream.dev/v1alpha1", "kind": "StreamingDeployment",
                      "metadata": {"name": "t", "namespace": "ns", "uid": "uid-1", "generation": 3},
                      "spec": {"state": "RUNNING"}, "status": status or {}})


class FakeReconciler:
    def __init__(self, result: Outcome | Exception) -> None:
        self.result = result
        self.calls: list[bool] = []

    def run(self, body: Any, *, deleting: bool = False) -> Outcome:
        self.calls.append(deleting)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(result: Outcome | Exception) -> FakeReconciler:
        reconciler = FakeReconciler(result)
        monkeypatch.setattr(handlers.RUNTIME, "reconciler", reconciler)
        return reconciler
    return install


def test_status_is_written_once_and_only_when_changed(fake: Any) -> None:
    new = {"wmlStatus": "RUNNING", "deploymentId": "d1", "lastSyncTime": "2026-11-27T18:00:00Z",
           "conditions": [{"type": "Ready", "status": "True"}]}
    fake(Outcome(dict(new)))
    patch = kopf.Patch()
    handlers.reconcile(body=make_body({"message": "old", "kopf": {"x": 1}}), patch=patch, reason="create")
    assert patch.status["wmlStatus"] == "RUNNING"
    assert patch.status["message"] is None  # a field we no longer report is removed
    assert "kopf" not in patch.status

    same = kopf.Patch()
    fake(Outcome(dict(new)))
    handlers.reconcile(body=make_body(dict(new)), patch=same, reason="update")
    assert not same  # nothing changed: no write at all


def test_a_change_in_the_same_second_as_the_last_write_is_written(fake: Any) -> None:
    # lastSyncTime has 1 s resolution: a re-create right after another write carries the same one.
    before = {"wmlStatus": "RUNNING", "deploymentId": "d1", "specHash": "h1", "lastSyncTime": "2026-11-27T18:00:00Z",
              "conditions": [{"type": "Ready", "status": "True"}]}
    fake(Outcome({**before, "deploymentId": "d2", "specHash": "h2"}))
    patch = kopf.Patch()
    handlers.reconcile(body=make_body(dict(before)), patch=patch, reason="update")
    assert (patch.status["deploymentId"], patch.status["specHash"]) == ("d2", "h2")


def test_transient_errors_keep_ready_and_leave_the_retry_to_the_poller(fake: Any) -> None:
    fake(Transient("GET /v3/...: 503", delay=7.0))
    handlers.RUNTIME.forget("uid-1")
    patch = kopf.Patch()
    ready = {"type": "Ready", "status": "True", "reason": "Running", "message": "",
             "lastTransitionTime": "2026-11-27T17:00:00Z", "observedGeneration": 3}
    body = make_body({"conditions": [ready], "observedGeneration": 3})
    handlers.reconcile(body=body, patch=patch, reason="update")  # no kopf.TemporaryError: no kopf worker waits
    by_type = {c["type"]: c for c in patch.status["conditions"]}
    assert by_type["Ready"]["status"] == "True"
    assert by_type["Ready"]["lastTransitionTime"] == "2026-11-27T17:00:00Z"
    assert by_type["Reconciling"]["reason"] == "WMLUnavailable"
    assert "retrying in 7 s" in by_type["Reconciling"]["message"]
    assert not handlers.RUNTIME.due("uid-1", body)  # during the backoff
    handlers.RUNTIME.next_attempt["uid-1"] -= 7.0
    assert handlers.RUNTIME.due("uid-1", body)  # right after it, whatever the poll interval
    handlers.RUNTIME.forget("uid-1")


def test_a_deletion_that_cannot_reach_wml_is_retried_by_kopf(fake: Any) -> None:
    fake(Transient("connection refused", delay=4.0))
    with pytest.raises(kopf.TemporaryError) as retry:  # kopf keeps the finalizer and calls again
        handlers.delete(body=make_body(), patch=kopf.Patch())
    assert retry.value.delay == 4.0
    handlers.RUNTIME.forget("uid-1")


def test_a_poll_backs_off_instead_of_raising(fake: Any) -> None:
    reconciler = fake(Transient("timeout", delay=30.0))
    body = make_body({"observedGeneration": 3})
    handlers.RUNTIME.forget("uid-1")
    handlers.RUNTIME.ran("uid-1", generation=3)
    handlers.RUNTIME.last_run["uid-1"] -= handlers.SETTINGS.poll_slow + 1
    assert handlers.RUNTIME.due("uid-1", body)
    status = handlers.poll_pass(body)
    assert reconciler.calls == [False]
    assert status is not None
    assert status["conditions"][0]["reason"] == "WMLUnavailable"
    assert not handlers.RUNTIME.due("uid-1", body)  # within the backoff: not polled again
    handlers.RUNTIME.forget("uid-1")


def test_delete_keeps_the_finalizer_until_done(fake: Any) -> None:
    fake(Outcome({"message": "cannot delete"}, finalized=False))
    with pytest.raises(kopf.TemporaryError):
        handlers.delete(body=make_body(), patch=kopf.Patch())
    reconciler = fake(Outcome({}, finalized=True))
    handlers.delete(body=make_body(), patch=kopf.Patch())
    assert reconciler.calls == [True]


def test_no_poll_while_another_pass_of_the_resource_runs() -> None:
    runtime = handlers.RUNTIME
    runtime.forget("uid-1")
    body = make_body({"observedGeneration": 3})
    runtime.ran("uid-1", generation=3)
    runtime.last_run["uid-1"] -= runtime.settings.poll_fast + 1
    assert runtime.due("uid-1", body)
    with runtime.passing("uid-1"):  # a change handler's pass: its outcome (backoff, Retry-After) decides
        assert not runtime.due("uid-1", body)
    assert runtime.due("uid-1", body)
    runtime.forget("uid-1")


def test_a_resource_is_left_to_its_create_or_resume_handler_first() -> None:
    """No pass in this process yet: kopf's create handler (a new resource) or resume handler (one found at
    start-up), maybe still queued behind a burst of others, does the first pass; a poll beside it would do the
    same work twice."""
    runtime = handlers.RUNTIME
    runtime.forget("uid-1")
    assert not runtime.due("uid-1", make_body())
    assert not runtime.due("uid-1", make_body({"observedGeneration": 3, "conditions": [
        {"type": "Ready", "status": "True"}]}))
    runtime.mark_dirty("uid-1")  # a Secret it reads changed meanwhile: still the handler's
    assert not runtime.due("uid-1", make_body())
    runtime.ran("uid-1")
    runtime.last_run["uid-1"] -= runtime.settings.poll_fast + 1
    assert runtime.due("uid-1", make_body())
    runtime.forget("uid-1")


def test_a_spec_change_is_left_to_its_update_handler() -> None:
    """A generation the last pass did not see: kopf's update handler (maybe queued) reconciles it, not a tick."""
    runtime = handlers.RUNTIME
    runtime.forget("uid-1")
    runtime.ran("uid-1", generation=2)
    runtime.last_run["uid-1"] -= runtime.settings.poll_slow + 1
    body = make_body({"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]})
    assert not runtime.due("uid-1", body)  # generation 3: not reconciled yet
    runtime.ran("uid-1", generation=3)
    runtime.last_run["uid-1"] -= runtime.settings.poll_slow + 1
    assert runtime.due("uid-1", body)
    runtime.forget("uid-1")


def test_stalled_resources_are_not_polled_fast() -> None:
    stalled = make_body({"conditions": [{"type": "Ready", "status": "False"},
                                        {"type": "Stalled", "status": "True"}], "observedGeneration": 3})
    changing = make_body({"conditions": [{"type": "Ready", "status": "False"}], "observedGeneration": 3})
    runtime = handlers.RUNTIME
    runtime.ran("uid-1")
    # One fast interval later: a changing resource is due, a stalled one waits for the steady interval.
    runtime.last_run["uid-1"] -= runtime.settings.poll_fast + 1
    assert runtime.due("uid-1", changing)
    assert not runtime.due("uid-1", stalled)
    runtime.mark_dirty("uid-1")  # ... or for a Secret it reads to change
    assert runtime.due("uid-1", stalled)
    runtime.forget("uid-1")


def test_routine_handler_successes_are_not_logged() -> None:
    def record(message: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, message, args, None)

    assert not handlers._not_routine(record("Handler %r succeeded.", "track"))
    assert not handlers._not_routine(record("Handler %r succeeded.", "secret_changed"))
    assert handlers._not_routine(record("Handler %r succeeded.", "reconcile"))
    assert handlers._not_routine(record("Handler %r failed with an exception. Will retry.", "secret_changed"))
