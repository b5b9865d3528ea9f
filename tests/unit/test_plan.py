"""plan() as a table: every decision the operator makes, without I/O."""

from __future__ import annotations

import pytest

from wml_api import errors as wml_errors
from wml_api.models import EXT_DEAD_LETTER_TOPIC, EXTENSIONS
from wml_operator.plan import (
    Action,
    Desired,
    Do,
    Last,
    Observed,
    View,
    plan,
    plan_refused,
    plan_unresolved,
    plan_unsupported,
    poll_interval,
    restart_backoff,
    retry_delay,
    settle,
)

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
    action = plan(desired, View(observed), previous, NOW)
    assert (action.do, action.reason, action.ready, action.stalled, action.event) == (do, reason, ready, stalled,
                                                                                      event)
    assert action.message


def test_patch_values() -> None:
    assert plan(d(STOP), View(o(RUN)), last(), NOW).value == STOP
    assert plan(d(), View(o(STOP)), last(wml_status=STOP), NOW).value == RUN
    assert plan(d(), View(o("FAILED")), last(), NOW).value == RUN


def test_failure_reason_reaches_the_message() -> None:
    assert "unknown topic tweets" in plan(d(restart_policy="Never"), View(o("FAILED", message="unknown topic tweets")),
                                          last(), NOW).message


def test_restart_backoff_grows_and_is_capped() -> None:
    assert [restart_backoff(n) for n in range(4)] == [10.0, 20.0, 40.0, 80.0]
    assert restart_backoff(30) == 600.0
    waiting = plan(d(), View(o("FAILED")), last(restart_count=1, last_restart_at=NOW - 5), NOW)
    assert waiting.wait == pytest.approx(15.0)


def test_delete_actions_let_the_finalizer_go_once_done() -> None:
    assert plan(d(deleting=True), View(o(RUN)), last(), NOW).finalize
    assert plan(d(deleting=True), View(None), last(), NOW).finalize
    assert plan(d(deleting=True, deletion_policy="Orphan"), View(o(RUN)), last(), NOW).finalize
    assert not plan(d(), View(o(RUN)), last(), NOW).finalize


LOOKS = [
    # (id, view, last, expected do): a create from a shared list only when nothing can be missing from it
    ("new resource, shared list: create from it", View(None, fresh=False), Last(), Do.CREATE),
    ("status names a deployment the shared list lacks: list again", View(None, fresh=False), last(),
     Do.LOOK_AGAIN),
    ("this process created one (answer lost): list again", View(None, fresh=False, made_here=True), Last(),
     Do.LOOK_AGAIN),
    ("a fresh list lacks it too: create", View(None), last(), Do.CREATE),
]


@pytest.mark.parametrize(("view", "previous", "do"), [c[1:] for c in LOOKS], ids=[c[0] for c in LOOKS])
def test_no_create_from_a_list_that_may_be_too_old(view: View, previous: Last, do: Do) -> None:
    assert plan(d(), view, previous, NOW).do == do


def test_duplicates_go_beside_the_action_unless_deleting_paused_or_adopting() -> None:
    view = View(o(RUN), extras=("dep-2",))
    assert plan(d(), view, last(), NOW).extras == ("dep-2",)
    assert plan(d(STOP), view, last(), NOW).extras == ("dep-2",)
    for desired in (d(deleting=True), d(paused=True), d(adopt_id="dep-1")):
        assert plan(desired, view, last(), NOW).extras == ()


SETTLES = [
    # (id, desired, done, WML's answer, expected reason, ready)
    ("created and answered RUNNING: Ready now", d(), Action(Do.CREATE, "Creating", "m"), o(RUN), "Running", True),
    ("created, still INITIALIZING: as done", d(), Action(Do.CREATE, "Creating", "m"), o("INITIALIZING"),
     "Creating", False),
    ("stopped at once", d(STOP), Action(Do.PATCH_STATE, "Stopping", "m", value=STOP), o(STOP), "Stopped", True),
    ("a wait changes nothing", d(), Action(Do.WAIT, "Starting", "m"), o(RUN), "Starting", False),
    ("deleting: nothing to settle", d(deleting=True), Action(Do.DELETE, "Deleting", "m"), o(RUN), "Deleting",
     False),
]


@pytest.mark.parametrize(("desired", "done", "after", "reason", "ready"), [c[1:] for c in SETTLES],
                         ids=[c[0] for c in SETTLES])
def test_settle_on_wmls_answer(desired: Desired, done: Action, after: Observed, reason: str, ready: bool) -> None:
    verdict = settle(desired, done, after, last(), NOW)
    assert (verdict.reason, verdict.ready) == (reason, ready)


UNRESOLVED = [
    # (id, deleting, last, endpoint known, do, reason, stalled, finalize)
    ("not deleting: stalled with the problem", False, last(), True, Do.NOTHING, "SecretNotFound", True, False),
    ("deleting, nothing was made", True, Last(), False, Do.NOTHING, "Deleted", False, True),
    ("deleting through the endpoint last used", True, last(), True, Do.DELETE, "Deleting", False, True),
    ("deleting, no endpoint known: cannot", True, last(), False, Do.NOTHING, "CannotDelete", True, False),
]


@pytest.mark.parametrize(("deleting", "previous", "known", "do", "reason", "stalled", "finalize"),
                         [c[1:] for c in UNRESOLVED], ids=[c[0] for c in UNRESOLVED])
def test_unresolved_spec_or_secrets(deleting: bool, previous: Last, known: bool, do: Do, reason: str,
                                    stalled: bool, finalize: bool) -> None:
    action = plan_unresolved(deleting, previous, known, "SecretNotFound", "spec.x: Secret ns/s does not exist")
    assert (action.do, action.reason, action.stalled, action.finalize) == (do, reason, stalled, finalize)
    assert action.message
    if do != Do.NOTHING or stalled:
        assert "Secret ns/s does not exist" in action.message  # the problem, named


@pytest.mark.parametrize(("error", "reason", "field"), [
    (wml_errors.Unauthorized("no", status=401), "WMLUnauthorized", "spec.wml.credentialsSecretRef"),
    (wml_errors.Forbidden("no", status=403), "WMLUnauthorized", "spec.wml.credentialsSecretRef"),
    (wml_errors.NotFound("no such model", status=404), "ModelNotFound", "spec.modelId: published model m7"),
    (wml_errors.TLSError("certificate verify failed"), "WMLTLSError", "certificate verify failed"),
    (wml_errors.BadRequest("limit reached", status=400), "WMLRejected", "limit reached"),
    (wml_errors.BadRequest("Model m7 is a mllib-3.5 model", status=400, code="model_not_deployable"),
     "ModelNotDeployable", "spec.modelId: published model m7 cannot be deployed by this WML service: Model m7 is"),
    (wml_errors.BadRequest("Model m7 declares no input schema", status=400, code="missing_input_schema"),
     "ModelNotDeployable", "spec.modelId: published model m7 cannot be deployed by this WML service: Model m7 de"),
    (wml_errors.BadRequest("Model m7 is pickled", status=400, code="pickled_models_disabled"),
     "ModelNotDeployable", "(400 pickled_models_disabled)"),
])
def test_refusals_stall_with_a_reason_and_the_field_to_fix(error: wml_errors.WMLError, reason: str,
                                                           field: str) -> None:
    action = plan_refused(error, "m7")
    assert (action.reason, action.stalled, action.do) == (reason, True, Do.NOTHING)
    assert field in action.message


def test_retry_delay_backs_off_with_jitter_and_honours_retry_after() -> None:
    assert [retry_delay(n, None, held_back=False, jitter=0.5) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert retry_delay(1, None, held_back=False, jitter=0.0) == pytest.approx(1.6)
    assert retry_delay(1, None, held_back=False, jitter=0.999) == pytest.approx(2.4, abs=0.01)
    assert retry_delay(20, None, held_back=False, jitter=0.5) == 300.0  # capped
    assert retry_delay(1, 45.0, held_back=False, jitter=0.5) == 45.0  # never sooner than WML asked
    assert retry_delay(0, 10.0, held_back=True, jitter=0.0) == 10.0  # held back: only what is left


def test_poll_interval() -> None:
    plain = {"metadata": {}}
    annotated = {"metadata": {"annotations": {"wmlstream.dev/poll-interval": "120"}}}
    assert poll_interval(plain, 5, 30, changing=True) == 5
    assert poll_interval(plain, 5, 30, changing=False) == 30
    assert poll_interval(annotated, 5, 30, changing=False) == 120
    assert poll_interval({"metadata": {"annotations": {"wmlstream.dev/poll-interval": "soon"}}}, 5, 30,
                         changing=False) == 30


@pytest.mark.parametrize(("dead_letter_topic", "extensions", "stalled"), [
    (None, frozenset(), False),
    (None, frozenset(EXTENSIONS), False),
    ("dlq", frozenset(EXTENSIONS), False),
    ("dlq", frozenset(EXTENSIONS) - {EXT_DEAD_LETTER_TOPIC}, True),
    ("dlq", frozenset(), True),
])
def test_a_dead_letter_topic_needs_a_server_that_lists_the_extension(
        dead_letter_topic: str | None, extensions: frozenset[str], stalled: bool) -> None:
    action = plan_unsupported(dead_letter_topic, extensions)
    if not stalled:
        assert action is None
        return
    assert action is not None
    assert (action.do, action.reason, action.stalled) == (Do.NOTHING, "DeadLetterTopicUnsupported", True)
    assert action.message.startswith("spec.output.deadLetterTopic: ")
    assert "nothing was created" in action.message
