"""The reconciler carries out plan()'s actions: driven here by an in-memory WML (tests.support.MemoryWML) and
Secrets from a dict. What it calls on WML, the status it leaves and the events it sends, case by case; the
integration suite runs the same reconciler against the real service."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from tests.support import DictSecrets, MemoryWML
from wml_api.errors import HeldBack, Unauthorized, Unavailable
from wml_api.models import DeploymentCreate, SparkServiceInstance
from wml_operator.login_copies import LoginNotKept, MemoryLogins
from wml_operator.reconcile import Reconciler
from wml_operator.resources import Resources
from wml_operator.secrets import Defaults, Endpoint
from wml_operator.status import Outcome
from wml_operator.wml import marker

UID = "uid-1"
SPARK = {"tenant_id": "t", "tenant_id_full": "tf", "cluster_master_url": "https://s", "instance_id": "i",
         "tenant_secret": "ts", "plan": "p"}
SECRETS = {"wml": {"url": "http://wml.test", "instance_id": "iid", "username": "u", "password": "pw"},
           "kafka": {"kafka_brokers_sasl": "b:9093", "user": "k", "password": "kp"},
           "spark": {"credentials.json": json.dumps(SPARK)}}
SPEC = {"state": "RUNNING", "modelId": "m1", "wml": {"credentialsSecretRef": {"name": "wml"}},
        "sparkCredentialsSecretRef": {"name": "spark", "key": "credentials.json"},
        "input": {"topic": "in", "connectionSecretRef": {"name": "kafka"}},
        "output": {"topic": "out", "connectionSecretRef": {"name": "kafka"}}}


class World:
    def __init__(self, answer_status: str | None = None) -> None:
        self.wml = MemoryWML(answer_status=answer_status)
        self.secrets = {k: dict(v) for k, v in SECRETS.items()}
        self.resources = Resources(5.0, 30.0)
        self.reconciler = Reconciler(DictSecrets(self.secrets), self.wml, self.resources, Defaults())
        self.status: dict[str, Any] = {}
        self.spec: dict[str, Any] = json.loads(json.dumps(SPEC))
        self.annotations: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"metadata": {"uid": UID, "namespace": "ns", "name": "tweets", "generation": 1,
                             "annotations": self.annotations}, "spec": self.spec, "status": self.status}

    def run(self, *, deleting: bool = False) -> Outcome:
        outcome = self.reconciler.run(self.body(), deleting=deleting)
        self.status = outcome.status
        return outcome

    def condition(self, kind: str) -> dict[str, Any] | None:
        return next((c for c in self.status.get("conditions", []) if c["type"] == kind), None)

    def running(self) -> str:
        """A first pass that leaves a RUNNING deployment, Ready; its id."""
        self.wml.answer_status = "RUNNING"
        self.run()
        self.wml.answer_status = None
        self.wml.calls.clear()
        return str(self.status["deploymentId"])


def test_a_new_resource_gets_one_deployment_marked_with_its_uid_and_spec() -> None:
    w = World()
    out = w.run()
    assert w.wml.changes() == [("create", "m1")]
    (dep,) = w.wml.deployments.values()
    assert marker(UID, w.status["specHash"]) in (dep.entity.description or "")
    assert (w.status["deploymentId"], w.status["wmlStatus"]) == (dep.id, "INITIALIZING")
    assert w.condition("Ready")["status"] == "False"  # type: ignore[index]
    assert w.condition("Reconciling")["reason"] == "Creating"  # type: ignore[index]
    assert out.events == [("Normal", "Creating", f"creating the WML deployment: created deployment {dep.id}")]


def test_a_create_answered_running_is_ready_in_the_same_pass_with_one_event() -> None:
    w = World(answer_status="RUNNING")
    out = w.run()
    assert w.condition("Ready")["status"] == "True"  # type: ignore[index]
    assert w.condition("Reconciling") is None
    assert len(out.events) == 1
    assert out.events[0][2].endswith("; Ready: the stream is RUNNING")


def test_a_steady_resource_changes_nothing_and_says_nothing() -> None:
    w = World()
    w.running()
    before = dict(w.status)
    out = w.run()
    assert w.wml.changes() == []
    assert out.events == []
    assert out.status == before  # not even lastSyncTime: nothing to write


@pytest.mark.parametrize(("state", "wml_status", "patched"), [("STOPPED", "RUNNING", "STOPPED"),
                                                              ("RUNNING", "STOPPED", "RUNNING")])
def test_the_declared_state_is_patched(state: str, wml_status: str, patched: str) -> None:
    w = World()
    dep = w.running()
    w.wml.set_status(dep, wml_status)
    w.status["wmlStatus"] = wml_status if state == "STOPPED" else "STOPPED"  # the user's change, not drift
    w.spec["state"] = state
    out = w.run()
    assert w.wml.changes() == [("patch", dep, patched)]
    assert w.status["wmlStatus"] == patched
    assert out.events[0][:2] == ("Normal", "Stopping" if patched == "STOPPED" else "Starting")


def test_a_deployment_gone_behind_our_back_is_looked_for_in_a_fresh_list_before_a_create() -> None:
    w = World()
    old = w.running()
    w.wml.deployments.clear()
    out = w.run()
    lists = [c for c in w.wml.calls if c[0] == "list"]
    assert [c[1] for c in lists] == ["30.0", "0"]  # the shared list, then one begun after the pass asked
    assert w.wml.changes() == [("create", "m1")]
    assert out.events[0][:2] == ("Warning", "DeletedBehindOurBack")
    assert old in out.events[0][2]


def test_a_second_deployment_of_the_resource_is_deleted_and_the_one_in_use_stays() -> None:
    w = World()
    kept = w.running()
    w.resources.note_created(UID)
    extra = w.wml.create("m1", _create_body(w), _spark())  # a create that reached WML after it was retried
    out = w.run()
    assert w.wml.changes() == [("create", "m1"), ("delete", extra.id)]
    assert set(w.wml.deployments) == {kept}
    assert ("Warning", "DuplicateDeleted") in [e[:2] for e in out.events]


def test_a_model_that_does_not_exist_stalls_once_per_problem() -> None:
    w = World()
    w.spec["modelId"] = "typo"
    out = w.run()
    stalled = w.condition("Stalled")
    assert stalled is not None
    assert stalled["reason"] == "ModelNotFound"
    assert out.events == [("Warning", "ModelNotFound", stalled["message"])]
    assert w.run().events == []  # the same problem again: no second event


def test_credentials_refused_stall_with_the_field_to_fix() -> None:
    w = World()
    w.wml.fail["list"] = Unauthorized("bad credentials", method="GET", path="/v3/x", status=401)
    w.run()
    stalled = w.condition("Stalled")
    assert stalled is not None
    assert stalled["reason"] == "WMLUnauthorized"
    assert stalled["message"].startswith("spec.wml.credentialsSecretRef")


def test_wml_unavailable_keeps_ready_and_backs_off_more_each_time() -> None:
    w = World()
    w.running()
    ready_before = w.condition("Ready")
    w.spec["state"] = "STOPPED"  # a change to make, while WML is away
    w.wml.fail["patch"] = Unavailable("503 busy", method="PATCH", path="/v3/x", status=503)
    first = w.run()
    assert first.retry_after is not None
    assert 1.6 <= first.retry_after <= 2.4  # 2 s, with jitter
    assert w.condition("Ready") == ready_before  # status, reason, message and time as they were
    assert w.condition("Reconciling")["reason"] == "WMLUnavailable"  # type: ignore[index]
    assert "503 busy" in w.condition("Reconciling")["message"]  # type: ignore[index]
    assert w.status["wmlStatus"] == "RUNNING"
    assert first.events == []
    w.wml.fail["patch"] = Unavailable("503 busy", method="PATCH", path="/v3/x", status=503)
    second = w.run()
    assert second.retry_after is not None
    assert 3.2 <= second.retry_after <= 4.8
    third = w.run()  # WML is back
    assert third.retry_after is None
    assert w.status["wmlStatus"] == "STOPPED"


def test_a_request_held_back_by_retry_after_waits_that_long_and_counts_no_failure() -> None:
    w = World()
    w.wml.fail["list"] = HeldBack("not sent", method="GET", path="/v3/x", retry_after=20.0)
    out = w.run()
    assert out.retry_after is not None
    assert 20.0 <= out.retry_after <= 24.0
    w.wml.fail["list"] = Unavailable("down", method="GET", path="/v3/x")
    assert 1.6 <= (w.run().retry_after or 0) <= 2.4  # the first failure counted


def test_deletion_deletes_the_deployment_and_finalizes() -> None:
    w = World()
    dep = w.running()
    out = w.run(deleting=True)
    assert w.wml.changes() == [("delete", dep)]
    assert out.finalized


def test_deletion_with_orphan_policy_leaves_the_deployment() -> None:
    w = World()
    dep = w.running()
    w.spec["deletionPolicy"] = "Orphan"
    out = w.run(deleting=True)
    assert out.finalized
    assert w.wml.changes() == []
    assert dep in w.wml.deployments


def test_deletion_after_the_secrets_are_gone_uses_the_kept_login() -> None:
    w = World()
    dep = w.running()
    w.secrets.clear()
    w.resources.forget(UID)  # a restarted operator: the copy of the login is all that is left
    out = w.run(deleting=True)
    assert out.finalized
    assert w.wml.changes() == [("delete", dep)]


def test_the_login_is_kept_before_anything_is_created_and_a_failure_creates_nothing() -> None:
    w = World()

    class Refusing(MemoryLogins):
        def keep(self, uid: str, resource: str, endpoints: Sequence[Endpoint]) -> None:
            raise LoginNotKept("cannot keep a copy of the WML login for deletion in Secret x/y: 403 Forbidden")

    w.reconciler.logins = Refusing()
    out = w.run()
    assert w.wml.deployments == {}
    assert out.retry_after is not None
    reconciling = w.condition("Reconciling") or {}
    assert reconciling.get("reason") == "LoginNotKept"
    assert "403 Forbidden" in reconciling["message"]
    w.reconciler.logins = MemoryLogins()
    w.run()
    assert len(w.wml.deployments) == 1
    assert [ep.instance_id for ep in w.reconciler.logins.kept(UID)] == ["iid"]


def test_deletion_without_secrets_nor_a_kept_login_waits_and_says_why() -> None:
    w = World()
    dep = w.running()
    w.secrets.clear()
    w.resources.forget(UID)  # a restarted operator remembers nothing
    w.reconciler.logins.drop(UID)  # and no copy was kept (an operator from before the copies made it)
    out = w.run(deleting=True)
    assert not out.finalized
    assert dep in w.wml.deployments
    assert w.condition("Stalled")["reason"] == "CannotDelete"  # type: ignore[index]


def test_a_paused_resource_is_observed_only() -> None:
    w = World()
    dep = w.running()
    w.wml.set_status(dep, "STOPPED")
    w.annotations["wmlstream.dev/reconcile"] = "paused"
    w.run()
    assert w.wml.changes() == []
    assert w.condition("Ready")["reason"] == "Paused"  # type: ignore[index]


def test_a_failed_stream_is_restarted_and_counted() -> None:
    w = World()
    dep = w.running()
    w.wml.set_status(dep, "FAILED")
    out = w.run()
    assert w.wml.changes() == [("patch", dep, "RUNNING")]
    assert w.status["restartCount"] == 1
    assert "lastRestartTime" in w.status
    assert out.events[0][:2] == ("Warning", "Restarting")


def test_an_invalid_spec_stalls_without_calling_wml() -> None:
    w = World()
    w.spec["input"]["topic"] = ""
    w.run()
    assert w.wml.calls == []
    assert w.condition("Stalled")["reason"] == "InvalidSpec"  # type: ignore[index]
    assert w.condition("Stalled")["message"].startswith("spec.input.topic")  # type: ignore[index]


def test_an_existing_deployment_is_adopted_by_annotation() -> None:
    w = World()
    theirs = w.wml.create("m1", _create_body(w, description="made by hand"), _spark())
    w.wml.set_status(theirs.id, "RUNNING")
    w.annotations["wmlstream.dev/deployment-id"] = theirs.id
    out = w.run()
    assert w.status["deploymentId"] == theirs.id
    assert [c for c in w.wml.changes() if c[0] != "create"] == []
    assert out.events[0][:2] == ("Warning", "Adopted")


def _spark() -> SparkServiceInstance:
    return SparkServiceInstance.model_validate({"credentials": SPARK})


def _create_body(w: World, description: str | None = None) -> DeploymentCreate:
    return DeploymentCreate(name="x", description=description or f"late {marker(UID, w.status.get('specHash'))}")


def test_a_rotated_wml_login_replaces_the_kept_copy_without_touching_the_stream() -> None:
    w = World()
    w.running()
    w.secrets["wml"]["password"] = "rotated"
    w.run()
    assert w.wml.changes() == []
    assert [ep.credentials.password for ep in w.reconciler.logins.kept(UID)] == ["rotated"]


def test_a_deletion_goes_on_when_its_copy_cannot_be_written() -> None:
    """It creates nothing, and the resource's own Secrets are still there."""
    w = World()
    dep = w.running()

    class Refusing(MemoryLogins):
        def keep(self, uid: str, resource: str, endpoints: Sequence[Endpoint]) -> None:
            raise LoginNotKept("cannot keep a copy of the WML login for deletion in Secret x/y: 403 Forbidden")

    w.reconciler.logins = Refusing()
    out = w.run(deleting=True)
    assert out.finalized
    assert w.wml.changes() == [("delete", dep)]
