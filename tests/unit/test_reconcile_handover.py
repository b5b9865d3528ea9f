"""A re-create hands the stream over (wml_operator.handover, carried out by the reconciler): checked first,
the old deployment drained, the new one started from its position, the old one deleted where it lives; a
typo leaves the old stream running. Driven by tests.support.MemoryWML, one per endpoint."""

from __future__ import annotations

import json
from typing import Any

from tests.support import DictSecrets, MemoryWML
from tests.unit.test_reconcile import SECRETS, SPEC, UID
from wml_api.models import EXT_DEAD_LETTER_TOPIC, EXTENSIONS
from wml_operator.reconcile import Reconciler
from wml_operator.resources import Resources
from wml_operator.secrets import Defaults, Endpoint
from wml_operator.status import Outcome


class Endpoints:
    """ports.Connector over one MemoryWML per WML URL."""

    def __init__(self, **by_url: MemoryWML) -> None:
        self.by_url = by_url

    def instance(self, endpoint: Endpoint) -> MemoryWML:
        return self.by_url[endpoint.url]


class World:
    def __init__(self, extensions: frozenset[str] | None = None) -> None:
        kw = {} if extensions is None else {"extensions": extensions}
        self.a = MemoryWML(**kw)  # type: ignore[arg-type]
        self.b = MemoryWML(**kw)  # type: ignore[arg-type]
        self.b._ids = iter(range(100, 200))  # ids distinct from a's
        self.secrets = {k: dict(v) for k, v in SECRETS.items()}
        self.reconciler = Reconciler(DictSecrets(self.secrets), Endpoints(**{"http://wml.test": self.a,
                                                                            "http://wml-b.test": self.b}),
                                     Resources(5.0, 30.0), Defaults())
        self.spec: dict[str, Any] = json.loads(json.dumps(SPEC))
        self.status: dict[str, Any] = {}

    def run(self, *, deleting: bool = False) -> Outcome:
        body = {"metadata": {"uid": UID, "namespace": "ns", "name": "tweets", "generation": 1, "annotations": {}},
                "spec": self.spec, "status": self.status}
        out = self.reconciler.run(body, deleting=deleting)
        self.status = out.status
        return out

    def running(self, wml: MemoryWML | None = None, offsets: dict[str, int] | None = None) -> str:
        wml = wml or self.a
        wml.answer_status = "RUNNING"
        self.run()
        wml.answer_status = None
        did = str(self.status["deploymentId"])
        wml.set_position(did, "in", offsets if offsets is not None else {"0": 300, "1": 12})
        wml.calls.clear()
        return did

    def condition(self, kind: str) -> dict[str, Any]:
        return next((c for c in self.status.get("conditions", []) if c["type"] == kind), {})

    def reasons(self, out: Outcome) -> list[str]:
        return [e[1] for e in out.events]


def test_a_credentials_rotation_drains_the_old_stream_and_starts_the_new_one_at_its_position() -> None:
    w = World()
    old = w.running()
    w.secrets["kafka"]["kafka_rest_url"] = "https://rest.example"  # an unrelated key, as a rotation changes
    out = w.run()
    new = w.status["deploymentId"]
    assert w.a.changes() == [("patch", old, "STOPPED"), ("create", "m1"), ("delete", old)]
    assert ("check", "m1") in w.a.calls  # before anything was touched
    assert w.a.calls.index(("check", "m1")) < w.a.calls.index(("patch", old, "STOPPED"))
    source = w.a.bodies[new].input.source  # type: ignore[union-attr]
    assert (source.start_position, source.starting_offsets) == ({"0": 300, "1": 12}, "earliest")
    assert list(w.a.deployments) == [new]
    assert w.reasons(out)[:2] == ["SpecChanged", "HandedOver"]
    assert w.status["handOver"] == f"handed over from deployment {old} at offsets 0:300, 1:12"
    assert w.status["endpoint"] == {"url": "http://wml.test", "instanceId": "iid", "credentialsSecret": "ns/wml"}


def test_a_model_id_typo_leaves_the_stream_running_and_stalls() -> None:
    w = World()
    old = w.running()
    w.spec["modelId"] = "m1-typo"
    out = w.run()
    assert w.a.changes() == []
    assert list(w.a.deployments) == [old]
    assert (w.status["deploymentId"], w.status["wmlStatus"]) == (old, "RUNNING")
    assert w.condition("Stalled")["reason"] == "ModelNotFound"
    assert f"deployment {old} keeps running" in w.condition("Stalled")["message"]
    assert w.reasons(out) == ["ModelNotFound"]
    # Fixing the typo hands over as any change does.
    w.spec["modelId"] = "m1"
    w.spec["output"]["topic"] = "out2"
    w.run()
    assert w.a.changes()[-1] == ("delete", old)
    assert w.condition("Stalled") == {}


def test_a_typo_after_a_drain_that_was_cut_short_starts_the_old_stream_again() -> None:
    w = World()
    old = w.running()
    w.a.set_status(old, "STOPPED")  # a pass drained it and was killed before it created the new one
    w.spec["modelId"] = "nope"
    w.run()
    assert w.a.changes() == [("patch", old, "RUNNING")]
    assert w.status["wmlStatus"] == "RUNNING"
    assert w.condition("Stalled")["reason"] == "ModelNotFound"


def test_a_pass_killed_after_the_create_only_retires_the_old_deployment() -> None:
    w = World()
    old = w.running()
    w.spec["output"]["topic"] = "out2"
    w.run()
    new = w.status["deploymentId"]
    # Put the old one back as a kill before the delete would have left it, with the status still naming it.
    w.a.deployments[old] = w.a.deployments[new].model_copy(update={"metadata": w.a.deployments[new].metadata
                                                                   .model_copy(update={"guid": old})})
    w.a.set_status(old, "STOPPED")
    desc = w.a.deployments[old].entity.description.replace(w.status["specHash"], "0ld")  # type: ignore[union-attr]
    w.a.deployments[old] = w.a.deployments[old].model_copy(update={"entity": w.a.deployments[old].entity.model_copy(
        update={"description": desc})})
    w.status = {**w.status, "deploymentId": old, "specHash": "0ld"}
    w.a.calls.clear()
    out = w.run()
    assert w.a.changes() == [("delete", old)]
    assert w.status["deploymentId"] == new
    assert "Retired" in w.reasons(out)


def test_a_stream_still_finishing_its_batch_is_waited_for() -> None:
    w = World()
    old = w.running()
    w.a.answer_status = "RUNNING"  # the stop is not done when WML answers
    w.spec["output"]["topic"] = "out2"
    w.run()
    assert w.a.changes() == [("patch", old, "STOPPED")]
    assert w.condition("Reconciling")["reason"] == "Draining"
    assert w.status["deploymentId"] == old
    w.a.answer_status = None
    w.a.set_status(old, "STOPPED")
    w.run()
    assert [c[0] for c in w.a.changes()][-2:] == ["create", "delete"]


def test_a_new_input_topic_starts_per_starting_offsets_unless_asked_to_keep_the_position() -> None:
    w = World()
    w.running()
    w.spec["input"]["topic"] = "in2"
    w.spec["input"]["startingOffsets"] = "latest"
    out = w.run()
    source = w.a.bodies[w.status["deploymentId"]].input.source  # type: ignore[union-attr]
    assert (source.start_position, source.starting_offsets) == (None, "latest")
    assert "TopicChanged" in w.reasons(out)
    old = w.running(offsets={"0": 7})
    w.spec["input"]["topic"] = "in3"
    w.spec["input"]["keepPositionOnTopicChange"] = True
    w.run()
    assert w.a.bodies[w.status["deploymentId"]].input.source.start_position == {"0": 7}  # type: ignore[union-attr]
    assert old not in w.a.deployments


def test_against_a_server_without_the_extensions_it_says_the_position_was_not_handed_over() -> None:
    w = World(extensions=frozenset())
    old = w.running()
    w.spec["output"]["topic"] = "out2"
    out = w.run()
    assert ("model", "m1") in w.a.calls
    assert ("check", "m1") not in w.a.calls
    assert [c[0] for c in w.a.changes()] == ["patch", "create", "delete"]
    new = w.status["deploymentId"]
    assert w.a.bodies[new].input.source.start_position is None  # type: ignore[union-attr]
    warning = next(e for e in out.events if e[1] == "PositionNotHandedOver")
    assert warning[0] == "Warning"
    assert "the server does not support it" in warning[2]
    assert old not in w.a.deployments
    w.a.set_status(new, "RUNNING")
    w.run()
    assert "position not handed over: the server does not support it" in w.condition("Ready")["message"]


def test_declared_stopped_is_created_stopped() -> None:
    w = World()
    w.spec["state"] = "STOPPED"
    out = w.run()
    did = w.status["deploymentId"]
    assert w.a.bodies[did].initial_status == "STOPPED"
    assert w.a.changes() == [("create", "m1")]
    assert w.status["wmlStatus"] == "STOPPED"
    assert w.condition("Ready")["status"] == "True"
    assert "StreamRanBriefly" not in w.reasons(out)


def test_declared_stopped_on_a_server_without_the_extension_is_stopped_at_once_and_says_it_ran() -> None:
    w = World(extensions=frozenset())
    w.spec["state"] = "STOPPED"
    out = w.run()
    assert "StreamRanBriefly" in w.reasons(out)
    w.run()
    assert w.a.changes()[-1] == ("patch", w.status["deploymentId"], "STOPPED")


def test_an_endpoint_change_stops_and_deletes_the_old_deployment_where_it_lives() -> None:
    w = World()
    old = w.running()
    w.spec["wml"]["url"] = "http://wml-b.test"
    out = w.run()
    new = w.status["deploymentId"]
    assert w.a.changes() == [("patch", old, "STOPPED"), ("delete", old)]
    assert w.b.changes() == [("create", "m1")]
    assert w.a.deployments == {}
    assert list(w.b.deployments) == [new]
    assert w.b.bodies[new].input.source.start_position == {"0": 300, "1": 12}  # type: ignore[union-attr]
    assert "DeletedBehindOurBack" not in w.reasons(out)
    assert w.status["endpoint"]["url"] == "http://wml-b.test"


def test_an_unreachable_old_endpoint_is_retried_and_nothing_is_created() -> None:
    from wml_api.errors import Unavailable
    w = World()
    w.running()
    w.spec["wml"]["url"] = "http://wml-b.test"
    w.a.fail["list"] = Unavailable("down", method="GET", path="/v3/...", status=503)
    out = w.run()
    assert out.retry_after is not None
    assert w.b.changes() == []
    assert w.b.deployments == {}
    assert w.condition("Reconciling")["reason"] == "WMLUnavailable"


def test_a_deployment_really_gone_from_the_old_endpoint_is_created_on_the_new_one() -> None:
    w = World()
    old = w.running()
    w.a.deployments.clear()
    w.spec["wml"]["url"] = "http://wml-b.test"
    out = w.run()
    assert w.b.changes() == [("create", "m1")]
    assert "DeletedBehindOurBack" in w.reasons(out)
    assert old in out.events[0][2]


def test_deleting_mid_hand_over_deletes_both() -> None:
    w = World()
    old = w.running()
    w.a.answer_status = "RUNNING"
    w.spec["output"]["topic"] = "out2"
    w.run()  # drained, not yet stopped
    w.a.answer_status = None
    out = w.run(deleting=True)
    assert out.finalized
    assert old not in w.a.deployments
    assert w.a.deployments == {}


def test_lag_is_reported_from_the_list() -> None:
    w = World()
    did = w.running()
    old = w.a.deployments[did]
    details = old.entity.status_details.model_copy(update={"lag": 42})  # type: ignore[union-attr]
    w.a.deployments[did] = old.model_copy(update={"entity": old.entity.model_copy(
        update={"status_details": details})})
    w.run()
    assert w.status["lag"] == 42


def test_a_move_waiting_for_the_old_endpoint_names_it() -> None:
    from wml_api.errors import Unavailable
    w = World()
    old = w.running()
    w.spec["wml"]["url"] = "http://wml-b.test"
    w.a.fail["list"] = Unavailable("connection refused", method="GET", path="/v3/...", status=None)
    w.run()
    message = w.condition("Reconciling")["message"]
    assert f"the old endpoint http://wml.test (deployment {old})" in message


def test_deleting_with_orphan_policy_mid_move_leaves_the_old_endpoint_alone() -> None:
    from wml_api.errors import Unavailable
    w = World()
    old = w.running()
    w.spec["deletionPolicy"] = "Orphan"
    w.spec["wml"]["url"] = "http://wml-b.test"
    w.a.fail["list"] = Unavailable("down", method="GET", path="/v3/...", status=503)
    out = w.run(deleting=True)
    assert out.finalized
    assert w.a.changes() == []
    assert old in w.a.deployments


def test_mid_move_the_logins_of_both_endpoints_are_kept_and_a_deletion_without_secrets_uses_the_old_one() -> None:
    """Issue 15: a move waiting for the old endpoint, then the namespace is deleted (Secrets first) and the
    operator restarts: the deployment the status names lives on the old endpoint, and is deleted there."""
    from wml_api.errors import Unavailable
    w = World()
    old = w.running()
    w.spec["wml"]["url"] = "http://wml-b.test"
    w.a.fail["list"] = Unavailable("down", method="GET", path="/v3/...", status=503)
    w.run()
    assert [ep.url for ep in w.reconciler.logins.kept(UID)] == ["http://wml-b.test", "http://wml.test"]
    w.a.fail.clear()
    w.secrets.clear()
    out = w.run(deleting=True)
    assert out.finalized
    assert w.a.changes() == [("delete", old)]
    assert w.b.deployments == {}


def test_after_a_move_only_the_new_endpoints_login_is_kept() -> None:
    w = World()
    w.running()
    w.spec["wml"]["url"] = "http://wml-b.test"
    w.run()
    w.run()  # the pass after: status.endpoint names the new endpoint
    assert [ep.url for ep in w.reconciler.logins.kept(UID)] == ["http://wml-b.test"]


def _without_dead_letters() -> frozenset[str]:
    return frozenset(EXTENSIONS) - {EXT_DEAD_LETTER_TOPIC}


def test_a_dead_letter_topic_goes_into_the_create_body() -> None:
    w = World()
    w.spec["output"]["deadLetterTopic"] = "out-dlq"
    w.run()
    target = w.a.bodies[w.status["deploymentId"]].output.target  # type: ignore[union-attr]
    assert (target.topic, target.dead_letter_topic) == ("out", "out-dlq")


def test_a_dead_letter_topic_added_hands_the_stream_over_like_an_output_topic_change() -> None:
    w = World()
    old = w.running()
    assert w.a.bodies[old].output.target.dead_letter_topic is None  # type: ignore[union-attr]
    w.spec["output"]["deadLetterTopic"] = "out-dlq"
    out = w.run()
    new = w.status["deploymentId"]
    assert w.a.changes() == [("patch", old, "STOPPED"), ("create", "m1"), ("delete", old)]
    assert w.a.bodies[new].output.target.dead_letter_topic == "out-dlq"  # type: ignore[union-attr]
    assert w.a.bodies[new].input.source.start_position == {"0": 300, "1": 12}  # type: ignore[union-attr]
    assert w.reasons(out)[:2] == ["SpecChanged", "HandedOver"]


def test_on_a_server_without_the_extension_a_new_resource_stalls_and_nothing_is_created() -> None:
    w = World(extensions=_without_dead_letters())
    w.spec["output"]["deadLetterTopic"] = "out-dlq"
    out = w.run()
    assert w.a.changes() == []
    assert w.a.deployments == {}
    stalled = w.condition("Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "DeadLetterTopicUnsupported")
    assert "spec.output.deadLetterTopic" in stalled["message"]
    assert w.condition("Ready")["status"] == "False"
    assert [e[:2] for e in out.events] == [("Warning", "DeadLetterTopicUnsupported")]
    w.run()
    assert w.a.deployments == {}  # the next pass neither
    del w.spec["output"]["deadLetterTopic"]
    w.run()
    assert w.a.changes() == [("create", "m1")]  # fixed: created
    assert w.condition("Stalled") == {}


def test_on_a_server_without_the_extension_a_change_stalls_and_the_old_stream_runs_on() -> None:
    w = World(extensions=_without_dead_letters())
    old = w.running()
    w.spec["output"]["deadLetterTopic"] = "out-dlq"
    w.run()
    assert w.a.changes() == []  # not drained, nothing created
    assert list(w.a.deployments) == [old]
    assert w.status["deploymentId"] == old
    stalled = w.condition("Stalled")
    assert stalled["reason"] == "DeadLetterTopicUnsupported"
    assert f"deployment {old} keeps running" in stalled["message"]
