"""status.outcome(): the whole status and the events of a pass, from its Result, without I/O."""

from __future__ import annotations

from typing import Any

from wml_operator.plan import Action, Do
from wml_operator.spec import StreamingDeploymentStatus
from wml_operator.status import Found, Result, outcome

RUNNING = Found("dep-1", "http://wml/v3/.../deployments/dep-1", "RUNNING", "h1")
READY = {"type": "Ready", "status": "True", "reason": "Running", "message": "the stream is RUNNING",
         "lastTransitionTime": "T0", "observedGeneration": 1}
STEADY: dict[str, Any] = {"observedGeneration": 1, "deploymentId": "dep-1", "deploymentUrl": RUNNING.url,
                          "wmlStatus": "RUNNING", "specHash": "h1", "restartCount": 0,
                          "message": "the stream is RUNNING", "lastSyncTime": "T0", "conditions": [READY],
                          "kopf": {"last-handled-configuration": "{}"}}
NOTHING = Action(Do.NOTHING, "Running", "the stream is RUNNING", ready=True)


def test_a_steady_pass_leaves_the_status_as_it_was_without_kopfs_part() -> None:
    out = outcome(STEADY, Result(NOTHING, NOTHING, found=RUNNING, spec_hash="h1"), 1, now="T1")
    assert out.status == {k: v for k, v in STEADY.items() if k != "kopf"}  # lastSyncTime too: nothing changed
    assert out.events == []
    StreamingDeploymentStatus.model_validate(out.status)  # typed by the status model


def test_a_create_fills_the_deployment_fields_and_says_so_once() -> None:
    create = Action(Do.CREATE, "Creating", "creating the WML deployment")
    found = Found("dep-2", "u2", "INITIALIZING", "h2")
    out = outcome({}, Result(create, create, found=found, spec_hash="h2", created="dep-2"), 1, now="T1")
    assert {k: out.status[k] for k in ("deploymentId", "wmlStatus", "specHash", "restartCount", "observedGeneration",
                                       "lastSyncTime")} == {"deploymentId": "dep-2", "wmlStatus": "INITIALIZING",
                                                            "specHash": "h2", "restartCount": 0,
                                                            "observedGeneration": 1, "lastSyncTime": "T1"}
    assert [(c["type"], c["status"], c["reason"]) for c in out.status["conditions"]] == [
        ("Ready", "False", "Creating"), ("Reconciling", "True", "Creating")]
    assert out.events == [("Normal", "Creating", "creating the WML deployment: created deployment dep-2")]


def test_a_stall_says_why_on_ready_and_stalled_and_sends_one_event_per_problem() -> None:
    stall = Action(Do.NOTHING, "SecretNotFound", "spec.input.connectionSecretRef: Secret ns/k does not exist",
                   stalled=True)
    first = outcome(STEADY, Result(stall, stall), 2, now="T1")
    by_type = {c["type"]: c for c in first.status["conditions"]}
    assert set(by_type) == {"Ready", "Stalled"}
    assert by_type["Ready"]["status"] == "False"
    assert by_type["Stalled"]["reason"] == "SecretNotFound"
    assert first.status["deploymentId"] == "dep-1"  # what it knew stays
    assert first.events == [("Warning", "SecretNotFound", stall.message)]
    again = outcome(first.status, Result(stall, stall), 2, now="T2")
    assert again.events == []
    assert again.status == first.status


def test_wml_unavailable_keeps_ready_and_the_rest_and_sets_the_retry() -> None:
    retry = Action(Do.RETRY, "WMLUnavailable", "WML unavailable, retrying in 4 s: 503", retry_after=4.0)
    out = outcome(STEADY, Result(retry, retry), 1, now="T1")
    ready, reconciling = out.status["conditions"]
    assert ready == READY  # reason, message and transition time: as they were
    assert (reconciling["type"], reconciling["reason"]) == ("Reconciling", "WMLUnavailable")
    assert out.retry_after == 4.0
    assert {k: v for k, v in out.status.items() if k not in ("conditions", "lastSyncTime")} == {
        k: v for k, v in STEADY.items() if k not in ("conditions", "lastSyncTime", "kopf")}
    assert out.events == []
    assert outcome(out.status, Result(retry, retry), 1, now="T2").status == out.status  # no second write


def test_a_restart_counts_and_a_recreate_resets_the_count() -> None:
    restart = Action(Do.RESTART, "Restarting", "failed; restart 1", value="RUNNING", event=True)
    out = outcome(STEADY, Result(restart, restart, found=RUNNING, spec_hash="h1", restarted_at=0.0), 1, now="T1")
    assert (out.status["restartCount"], out.status["lastRestartTime"]) == (1, "1970-01-01T00:00:00Z")
    assert out.events == [("Warning", "Restarting", "failed; restart 1")]
    recreate = Action(Do.RECREATE, "SpecChanged", "changed", event=True)
    found = Found("dep-3", "u3", "RUNNING", "h3")
    again = outcome(out.status, Result(recreate, NOTHING, found=found, spec_hash="h3", created="dep-3"), 1, now="T2")
    assert again.status["restartCount"] == 0
    assert "lastRestartTime" not in again.status
    assert again.status["specHash"] == "h3"
    # A warning is not merged with the news that it is Ready again: that is an event of its own.
    assert again.events == [("Warning", "SpecChanged", "changed: created deployment dep-3"),
                            ("Normal", "Ready", "the stream is RUNNING")]


def test_a_deletion_that_is_done_finalizes_and_one_that_is_not_does_not() -> None:
    delete = Action(Do.DELETE, "Deleting", "deleting WML deployment dep-1", finalize=True)
    assert outcome(STEADY, Result(delete, delete, deleting=True), 1).finalized
    cannot = Action(Do.NOTHING, "CannotDelete", "cannot delete WML deployment dep-1: no Secret", stalled=True)
    assert not outcome(STEADY, Result(cannot, cannot, deleting=True), 1).finalized


def test_leaving_ready_says_so_and_an_adopted_deployment_keeps_our_hash() -> None:
    wait = Action(Do.WAIT, "Starting", "WML is starting the stream")
    out = outcome(STEADY, Result(wait, wait, found=Found("dep-1", RUNNING.url, "INITIALIZING", None),
                                 spec_hash="h1"), 1, now="T1")
    assert out.events == [("Normal", "NotReady", "WML is starting the stream")]
    adopt = Action(Do.ADOPT, "Adopted", "adopted existing deployment dep-9", event=True)
    theirs = Found("dep-9", "u9", "RUNNING", "someone-elses")
    adopted = outcome({}, Result(adopt, NOTHING, found=theirs, spec_hash="h1", adopting=True), 1, now="T1")
    assert (adopted.status["deploymentId"], adopted.status["specHash"]) == ("dep-9", "h1")
