"""spec.modelRef: the stream waits for its PublishedModel, runs the version it offers, moves to a new version
through a re-create, and keeps what it runs while the model cannot offer one. The reconciler driven by an
in-memory WML (tests.support.MemoryWML), as in test_reconcile."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import ValidationError

from tests.unit.test_reconcile import World
from wml_operator.model_refs import Chosen, ModelNotReady, choose, ready_model
from wml_operator.spec import parse_spec


class Models:
    """PublishedModels by name, as KubeModels would give them."""

    def __init__(self) -> None:
        self.bodies: dict[str, dict[str, Any]] = {}

    def read(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.bodies.get(name)

    def put(self, name: str, *, ready: bool, model: str = "m1", version: str = "v1", generation: int = 1,
            observed: int | None = None, reason: str = "Published", message: str = "") -> None:
        self.bodies[name] = {
            "metadata": {"name": name, "namespace": "ns", "generation": generation},
            "status": {"observedGeneration": generation if observed is None else observed, "modelId": model,
                       "versionId": version, "digest": f"sha-{version}", "conditions": [
                           {"type": "Ready", "status": "True" if ready else "False", "reason": reason,
                            "message": message}]}}


def world() -> tuple[World, Models]:
    w, models = World(), Models()
    w.reconciler.models = models
    w.spec.pop("modelId")
    w.spec["modelRef"] = {"name": "sentiment"}
    return w, models


def test_the_spec_takes_exactly_one_of_model_id_and_model_ref() -> None:
    w, _ = world()
    assert parse_spec(w.spec).model_ref is not None
    with pytest.raises(ValidationError, match="exactly one of modelId and modelRef"):
        parse_spec({**w.spec, "modelId": "m1"})
    with pytest.raises(ValidationError, match="exactly one of modelId and modelRef"):
        parse_spec({k: v for k, v in w.spec.items() if k != "modelRef"})


@pytest.mark.parametrize(("status", "generation", "want"), [
    ({"observedGeneration": 2, "modelId": "m", "versionId": "v", "digest": "d",
      "conditions": [{"type": "Ready", "status": "True"}]}, 2, Chosen("m", "v")),
    ({"observedGeneration": 1, "modelId": "m", "versionId": "v", "digest": "d",  # Ready for an older spec
      "conditions": [{"type": "Ready", "status": "True"}]}, 2, "not yet published at generation 2"),
    ({}, 1, "not yet published at generation 1"),
    ({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False", "reason": "DigestMismatch",
                                               "message": "spec.source.url.sha256: got abc"}]}, 1,
     "is not Ready: DigestMismatch: spec.source.url.sha256: got abc"),
])
def test_what_a_published_model_offers(status: dict[str, Any], generation: int, want: Chosen | str) -> None:
    got = ready_model({"metadata": {"name": "pm", "generation": generation}, "status": status})
    assert got == want if isinstance(want, Chosen) else want in str(got)


def test_a_stream_waits_for_its_model_and_calls_nothing() -> None:
    w, models = world()
    out = w.run()
    assert w.wml.calls == []
    assert w.condition("Reconciling")["reason"] == "ModelNotReady"  # type: ignore[index]
    assert "PublishedModel ns/sentiment does not exist" in w.condition("Reconciling")["message"]  # type: ignore[index]
    assert (w.condition("Stalled") or {}).get("status") != "True"
    assert out.events == []
    models.put("sentiment", ready=False, observed=0)
    w.run()
    assert w.wml.calls == []
    assert "spec.modelRef: PublishedModel sentiment is not Ready: not yet published" in \
        w.condition("Reconciling")["message"]  # type: ignore[index]


def test_a_ready_model_is_deployed_and_its_version_recorded() -> None:
    w, models = world()
    models.put("sentiment", ready=True, model="m1", version="v1")
    w.run()
    assert w.wml.changes() == [("create", "m1")]
    assert (w.status["modelId"], w.status["modelVersion"]) == ("m1", "v1")


def test_a_new_version_re_creates_and_a_model_not_ready_keeps_the_running_one() -> None:
    w, models = world()
    models.put("sentiment", ready=True, version="v1")
    first = w.running()
    hash_v1 = w.status["specHash"]
    # Being published again, or failing to: the stream runs on with what it runs.
    models.put("sentiment", ready=False, version="v1", generation=2, observed=2, reason="DigestMismatch")
    w.run()
    assert w.wml.changes() == []
    assert (w.status["deploymentId"], w.status["specHash"], w.status["modelVersion"]) == (first, hash_v1, "v1")
    models.put("sentiment", ready=True, version="v2", generation=2)
    w.run()
    assert w.status["deploymentId"] != first
    assert w.status["specHash"] != hash_v1
    assert w.status["modelVersion"] == "v2"
    assert ("create", "m1") in w.wml.changes()


def test_a_deletion_needs_no_model() -> None:
    w, models = world()
    models.put("sentiment", ready=True)
    w.running()
    models.bodies.clear()  # a prune took the PublishedModel too
    out = w.run(deleting=True)
    assert out.finalized
    assert w.wml.deployments == {}


def test_choose_falls_back_only_with_a_deployment() -> None:
    w, models = world()
    spec = parse_spec(w.spec)
    with pytest.raises(ModelNotReady):
        choose(spec, "ns", {"modelId": "pm-1", "modelVersion": "v1"}, models, deleting=False)
    assert choose(spec, "ns", {"modelId": "pm-1", "modelVersion": "v1", "deploymentId": "d"}, models,
                  deleting=False) == Chosen("pm-1", "v1")


def test_a_model_published_on_another_endpoint_makes_the_stream_wait() -> None:
    w, models = world()
    models.put("sentiment", ready=True)
    models.bodies["sentiment"]["status"]["endpoint"] = {"url": "http://other.test", "instanceId": "iid"}
    w.run()
    assert w.wml.calls == []
    message = w.condition("Reconciling")["message"]  # type: ignore[index]
    assert "published on http://other.test (instance iid), not on this stream's WML endpoint" in message
    models.bodies["sentiment"]["status"]["endpoint"] = {"url": "http://wml.test", "instanceId": "iid"}
    w.run()
    assert w.wml.changes() == [("create", "m1")]
