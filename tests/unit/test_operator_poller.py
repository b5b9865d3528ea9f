"""The poller that replaces a kopf timer per resource: which resources it polls, how many at once, what it writes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from wml_operator.poller import Poller
from wml_operator.resources import Resources, trimmed

READY = [{"type": "Ready", "status": "True"}]


def body(uid: str, *, generation: int = 1, status: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "wmlstream.dev/v1alpha1", "kind": "StreamingDeployment",
            "metadata": {"name": f"sd-{uid}", "namespace": "ns", "uid": uid, "generation": generation,
                         "resourceVersion": "7", **meta},
            "spec": {"state": "RUNNING"},
            "status": {"observedGeneration": generation, "conditions": READY} if status is None else status}


class Recorder:
    """A pass that notes what it was given; `block` holds passes until set."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.passes: list[str] = []
        self.block = threading.Event()
        self.block.set()
        self.lock = threading.Lock()

    def run_pass(self, b: Mapping[str, Any]) -> None:
        self.block.wait(5)
        with self.lock:
            self.passes.append(b["metadata"]["uid"])
        if self.fail:
            raise RuntimeError("the apiserver is away")


def runtime(poll_fast: float = 0.2, poll_slow: float = 0.4) -> Resources:
    return Resources(poll_fast, poll_slow)


def reconciled(rt: Resources, uid: str, ago: float, generation: int = 1) -> None:
    with rt.passing(uid):
        pass
    rt.ran(uid, generation=generation)
    state = rt._state(uid)
    assert state is not None
    assert state.last_run is not None
    state.last_run -= ago


def one_due(rec: Recorder, rt: Resources | None = None) -> Poller:
    """A poller over one resource, u1, reconciled long enough ago to be due."""
    rt = rt or runtime()
    poller = Poller(rt, rec.run_pass, concurrency=4)
    rt.track("ADDED", body("u1"))
    reconciled(rt, "u1", ago=1.0)
    return poller


def test_a_body_is_kept_without_managed_fields_and_foreign_annotations() -> None:
    raw = body("u1", managedFields=[{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
               annotations={"kubectl.kubernetes.io/last-applied-configuration": "{...}" * 100,
                            "wmlstream.dev/poll-interval": "60"})
    kept = trimmed(raw)
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["annotations"] == {"wmlstream.dev/poll-interval": "60"}
    assert kept["spec"] == raw["spec"]
    assert kept["status"] == raw["status"]
    assert {k: kept["metadata"][k] for k in ("name", "namespace", "uid", "generation")} == {
        "name": "sd-u1", "namespace": "ns", "uid": "u1", "generation": 1}


def test_watch_events_add_replace_and_remove_bodies() -> None:
    poller = Poller(runtime(), Recorder().run_pass, concurrency=4)
    poller.resources.track("ADDED", body("u1"))
    poller.resources.track("MODIFIED", body("u1", generation=2))
    poller.resources.track("ADDED", body("u2"))
    assert {b["metadata"]["uid"]: b["metadata"]["generation"] for b in poller.resources.bodies()} == {"u1": 2, "u2": 1}
    poller.resources.track("DELETED", body("u1"))
    assert [b["metadata"]["uid"] for b in poller.resources.bodies()] == ["u2"]
    assert poller.resources.sizes()["resources"] == 1  # u1 is forgotten whole
    poller.seen()
    assert poller.context is not None  # taken at the first event, for kopf.event() in passes


def test_only_due_resources_are_picked_and_never_one_being_deleted() -> None:
    rt = runtime()
    poller = Poller(rt, Recorder().run_pass, concurrency=10)
    for uid in ("steady", "recent", "deleting", "new"):
        poller.resources.track("ADDED", body(uid, **({"deletionTimestamp": "2026-12-01T00:00:00Z"} if uid == "deleting"
                                           else {})))
    reconciled(rt, "steady", ago=1.0)  # past poll_slow
    reconciled(rt, "recent", ago=0.0)
    reconciled(rt, "deleting", ago=1.0)  # due by time, but deletion is kopf's delete handler's
    # "new": no pass in this process yet, left to kopf's create/resume handler
    assert [b["metadata"]["uid"] for b in poller.due()] == ["steady"]


def test_no_more_passes_at_once_than_its_concurrency() -> None:
    rt = runtime()
    poller = Poller(rt, Recorder().run_pass, concurrency=3)
    for i in range(10):
        poller.resources.track("ADDED", body(f"u{i}"))
        reconciled(rt, f"u{i}", ago=1.0)
    assert len(poller.due()) == 3
    poller.running.update({"u0", "u1"})
    assert [b["metadata"]["uid"] for b in poller.due()] == ["u2"]


async def _run_for(poller: Poller, seconds: float) -> None:
    task = asyncio.create_task(poller.run(None))
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.gather(*poller.tasks, return_exceptions=True)


def test_a_due_pass_runs_in_a_thread() -> None:
    rec = Recorder()
    poller = one_due(rec)
    asyncio.run(_run_for(poller, 0.05))
    assert rec.passes == ["u1"]
    assert not poller.running


def test_a_pass_under_way_is_not_started_twice() -> None:
    rec = Recorder()
    rec.block.clear()
    poller = one_due(rec, runtime(poll_fast=0.02, poll_slow=0.02))  # due again at every tick

    async def scenario() -> None:
        task = asyncio.create_task(poller.run(None))
        await asyncio.sleep(0.2)  # ten ticks while the first pass is held
        assert poller.running == {"u1"}
        rec.block.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.gather(*poller.tasks, return_exceptions=True)

    asyncio.run(scenario())
    assert rec.passes == ["u1"]


def test_a_failed_pass_is_retried_later_and_polling_goes_on() -> None:
    rec = Recorder(fail=True)
    poller = one_due(rec)
    rt = poller.resources
    asyncio.run(_run_for(poller, 0.05))
    assert rec.passes == ["u1"]
    (kept,) = rt.bodies()
    assert not rt.due("u1", kept)  # backs off for poll_fast
    state = rt._state("u1")
    assert state is not None
    assert state.next_attempt > time.monotonic()
    state.next_attempt = 0.0
    assert rt.due("u1", kept)  # and then comes back (dirty)


SPEC = {"modelId": "m", "sparkCredentialsSecretRef": {"name": "spark", "key": "k"},
        "wml": {"credentialsSecretRef": {"name": "wml"}},
        "input": {"topic": "i", "connectionSecretRef": {"name": "kafka"}},
        "output": {"topic": "o", "connectionSecretRef": {"name": "kafka-out"}}}


def test_the_secrets_a_spec_names_wake_its_resource() -> None:
    poller = Poller(runtime(), Recorder().run_pass, concurrency=4)
    poller.resources.track("ADDED", {**body("u1"), "spec": SPEC})
    poller.resources.track("ADDED", {**body("u2"), "spec": {**SPEC, "output": {"topic": "o",
                                                                     "connectionSecretRef": {"name": "kafka"}}}})
    assert [poller.resources.users_of("ns", n) for n in ("spark", "wml", "kafka", "kafka-out")] == [
        ["u1", "u2"], ["u1", "u2"], ["u1", "u2"], ["u1"]]
    assert poller.resources.users_of("other-ns", "kafka") == []
    # A spec edit that names another Secret moves the resource; deletion removes it.
    poller.resources.track("MODIFIED", {**body("u1", generation=2), "spec": {**SPEC, "wml": {
        "credentialsSecretRef": {"name": "wml-2"}}}})
    assert poller.resources.users_of("ns", "wml") == ["u2"]
    assert poller.resources.users_of("ns", "wml-2") == ["u1"]
    poller.resources.track("DELETED", body("u2"))
    assert poller.resources.users_of("ns", "spark") == ["u1"]
    assert poller.resources.users_of("ns", "wml") == []


def test_an_invalid_spec_names_no_secret() -> None:
    poller = Poller(runtime(), Recorder().run_pass, concurrency=4)
    poller.resources.track("ADDED", {**body("u1"), "spec": {"bad": 1}})
    assert poller.resources.users_of("ns", "spark") == []
    # Still polled: its Stalled condition is its own pass's.
    assert [b["metadata"]["uid"] for b in poller.resources.bodies()] == ["u1"]
