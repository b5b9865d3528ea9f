"""plan() as a table: every decision the operator makes, without I/O."""

from __future__ import annotations

import pytest

from wml_operator.plan import Desired, Do, Last, Observed, plan, restart_backoff

RUN, STOP = "RUNNING", "STOPPED"
H = "hash-1"
NOW = 1_000_000.0


def d(state: str = RUN, **kw: object) -> Desired:
    return Desired(state=state, spec_hash=str(kw.pop("spec_hash", H)), **kw)  # type: ignore[arg-type]


def o(status: str, did: str = "dep-1", message: str | None = None, spec_hash: str | None = None) -> Observed:
    return Observed(did, status, message, spec_hash)


def last(**kw: object) -> Last:
    base: dict[str, object] = {"deployment_id": "dep-1", "spec_hash": H, "wml_status": RUN}
    return Last(**{**base, **kw})  # type: ignore[arg-type]


CASES = [
    # (id, desired, observed, last, expected do, reason, ready, stalled, event)
    ("new resource: create", d(), None, Last(), Do.CREATE, "Creating", False, False, False),
    ("deployment deleted behind our back", d(), None, last(), Do.CREATE, "DeletedBehindOurBack", False, False, True),
    ("running as declared", d(), o(RUN), last(), Do.NOTHING, "Running", True, False, False),
    ("stopped as declared", d(STOP), o(STOP), last(wml_status=STOP), Do.NOTHING, "Stopped", True, False, False),
    ("starting", d(), o("INITIALIZING"), last(wml_status="INITIALIZING"), Do.WAIT, "Starting", False, False,
     False),
    ("user stops", d(STOP), o(RUN), last(), Do.PATCH_STATE, "Stopping", False, False, False),
    ("user starts", d(), o(STOP), last(wml_status=STOP), Do.PATCH_STATE, "Starting", False, False, False),
    ("stopped behind our back", d(), o(STOP), last(wml_status=RUN), Do.PATCH_STATE, "StoppedBehindOurBack",
     False, False, True),
    ("started behind our back", d(STOP), o(RUN), last(wml_status=STOP), Do.PATCH_STATE, "StartedBehindOurBack",
     False, False, True),
    ("spec changed: recreate", d(spec_hash="hash-2"), o(RUN), last(), Do.RECREATE, "SpecChanged", False, False,
     True),
    ("spec changed, the deployment's marker agrees with the status", d(spec_hash="hash-2"), o(RUN, spec_hash=H),
     last(), Do.RECREATE, "SpecChanged", False, False, True),
    ("re-created, its status write lost: the marker is current", d(spec_hash="hash-2"),
     o(RUN, "dep-2", spec_hash="hash-2"), last(), Do.NOTHING, "Running", True, False, False),
    ("the status is current but the deployment was made from another spec", d(), o(RUN, spec_hash="hash-0"),
     last(), Do.RECREATE, "SpecChanged", False, False, True),
    ("adopted: the marker of another resource's spec does not count", d(adopt_id="dep-9"),
     o(RUN, "dep-9", spec_hash="other"), last(deployment_id="dep-9"), Do.NOTHING, "Running", True, False, False),
    ("failed, OnFailure, first restart", d(), o("FAILED", message="bad password"), last(wml_status="FAILED"),
     Do.RESTART, "Restarting", False, False, True),
    ("failed, OnFailure, in backoff", d(), o("FAILED"), last(wml_status="FAILED", restart_count=2,
                                                             last_restart_at=NOW - 5),
     Do.WAIT, "Failed", False, False, False),
    ("failed, OnFailure, backoff over", d(), o("FAILED"), last(wml_status="FAILED", restart_count=2,
                                                               last_restart_at=NOW - 41),
     Do.RESTART, "Restarting", False, False, True),
    ("failed, Never", d(restart_policy="Never"), o("FAILED", message="unknown topic"), last(), Do.NOTHING,
     "Failed", False, True, False),
    ("failed but declared STOPPED", d(STOP), o("FAILED"), last(), Do.PATCH_STATE, "Stopping", False, False,
     False),
    ("unknown WML status: wait", d(), o("DEPLOY_IN_PROGRESS"), last(), Do.WAIT, "Waiting", False, False, False),
    ("paused: observe only", d(paused=True), o(STOP), last(), Do.NOTHING, "Paused", False, False, False),
    ("paused and in the declared state", d(paused=True), o(RUN), last(), Do.NOTHING, "Paused", True, False,
     False),
    ("paused, nothing there: no create", d(paused=True), None, Last(), Do.NOTHING, "Paused", False, False, False),
    ("adopt an existing deployment", d(adopt_id="dep-9"), o(RUN, "dep-9"), Last(), Do.ADOPT, "Adopted", False,
     False, True),
    ("adopted and running", d(adopt_id="dep-9"), o(RUN, "dep-9"), last(deployment_id="dep-9", spec_hash="old"),
     Do.NOTHING, "Running", True, False, False),
    ("adoption target missing", d(adopt_id="dep-9"), None, Last(), Do.NOTHING, "AdoptionTargetNotFound", False,
     True, False),
    ("delete", d(deleting=True), o(RUN), last(), Do.DELETE, "Deleting", False, False, False),
    ("delete, already gone (404)", d(deleting=True), None, last(), Do.NOTHING, "Deleted", False, False, False),
    ("delete with Orphan policy", d(deleting=True, deletion_policy="Orphan"), o(RUN), last(), Do.NOTHING,
     "Orphaned", False, False, False),
    ("delete while paused still deletes", d(deleting=True, paused=True), o(RUN), last(), Do.DELETE, "Deleting",
     False, False, False),
]


@pytest.mark.parametrize(("desired", "observed", "previous", "do", "reason", "ready", "stalled", "event"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(desired: Desired, observed: Observed | None, previous: Last, do: Do, reason: str, ready: bool,
              stalled: bool, event: bool) -> None:
    action = plan(desired, observed, previous, NOW)
    assert (action.do, action.reason, action.ready, action.stalled, action.event) == (do, reason, ready, stalled,
                                                                                      event)
    assert action.message


def test_patch_values() -> None:
    assert plan(d(STOP), o(RUN), last(), NOW).value == STOP
    assert plan(d(), o(STOP), last(wml_status=STOP), NOW).value == RUN
    assert plan(d(), o("FAILED"), last(), NOW).value == RUN


def test_failure_reason_reaches_the_message() -> None:
    assert "unknown topic tweets" in plan(d(restart_policy="Never"), o("FAILED", message="unknown topic tweets"),
                                          last(), NOW).message


def test_restart_backoff_grows_and_is_capped() -> None:
    assert [restart_backoff(n) for n in range(4)] == [10.0, 20.0, 40.0, 80.0]
    assert restart_backoff(30) == 600.0
    waiting = plan(d(), o("FAILED"), last(restart_count=1, last_restart_at=NOW - 5), NOW)
    assert waiting.wait == pytest.approx(15.0)
