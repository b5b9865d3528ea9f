"""Re-creates hand the stream over (issue 14), on the whole chain with real streams: every input record is
read back from the output (read_committed) exactly once across a credentials rotation, a model change, an
output-topic change and a WML endpoint change; a resource created STOPPED scores nothing until RUNNING; a
modelId typo leaves the running stream alone."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.conftest import wml_groups
from tests.e2e.conftest import StreamEnv, audit_trail, wait_for
from tests.e2e.test_behaviours import ready, wml
from tests.e2e.test_lifecycle import Output, condition, produce, sdep
from wml_localplatform.wmloperator import WMLOperator
from wml_localplatform.wmlservice import WMLService

Kubectl = Callable[..., Any]
THREE_CLASSES = "8d2c6b1e-4f7a-4c39-a5e0-71b9d3f2c846"  # the service's second sample model


def status(k8s_api: k8s.ApiClient, env: StreamEnv) -> dict[str, Any]:
    return dict(sdep(k8s_api, env.namespace, "tweets").get("status") or {})


def scored(out: Output, keys: list[str], timeout: float = 90.0) -> None:
    """Waits until every key is on the output (read_committed), then asserts each is there exactly once."""
    wait_for(f"{len(keys)} records scored", lambda: out.drain(1.0) is not None and set(keys) <= set(out.by_key),
             timeout=timeout)
    out.drain(2.0)  # anything scored twice would come by now
    assert {k: n for k, n in out.by_key.items() if n != 1} == {}, "records scored more than once"
    assert set(out.by_key) == set(keys), "records on the output that were never produced"


def new_deployment(k8s_api: k8s.ApiClient, env: StreamEnv, old: str) -> str:
    found = wait_for("the re-created deployment", lambda: status(k8s_api, env).get("deploymentId") != old
                     and status(k8s_api, env).get("deploymentId"), timeout=90)
    return str(found)


def events(kubectl: Kubectl, ns: str, reason: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(kubectl("get", "events", "-n", ns, "--field-selector",
                                                     f"reason={reason}", "-o", "json").stdout)["items"]
    return items


def streaming(env: StreamEnv, kubectl: Kubectl, k8s_api: k8s.ApiClient, output: Output,
              records: int) -> tuple[list[str], str]:
    """The resource applied RUNNING after `records` tweets and all of them scored: their keys, its deployment."""
    first = [f"a{i}" for i in range(records)]
    produce(env, first)
    kubectl("apply", "-f", "-", input=env.manifest())
    ready(kubectl, env.namespace)
    scored(output, first)
    return first, str(status(k8s_api, env)["deploymentId"])


@pytest.fixture
def output(stream_env: StreamEnv) -> Iterator[Output]:
    out = Output(stream_env)
    yield out
    out.close()


def test_a_credentials_rotation_scores_each_record_once(stream_env: StreamEnv, operator: WMLOperator,
                                                         kubectl: Kubectl, k8s_api: k8s.ApiClient,
                                                         output: Output) -> None:
    """The scenario of the issue: 300 tweets, then one unrelated key added to the Kafka Secret."""
    env, ns = stream_env, stream_env.namespace
    first, old = streaming(env, kubectl, k8s_api, output, 300)
    kubectl("patch", "secret", "kafka", "-n", ns, "--type=merge", "-p",
            json.dumps({"stringData": {"kafka_rest_url": "https://kafka-rest.example"}}))
    new = new_deployment(k8s_api, env, old)
    ready(kubectl, ns)
    later = [f"b{i}" for i in range(100)]
    produce(env, later)
    scored(output, first + later)  # 400, not 700
    assert [d.id for d in wml(env).list_instance_deployments()] == [new]
    assert status(k8s_api, env)["handOver"].startswith(f"handed over from deployment {old} at offsets 0:300")
    assert events(kubectl, ns, "HandedOver")
    wait_for("the old deployment's consumer group deleted", lambda: f"wml-{old}" not in wml_groups(env.kafka),
             timeout=30)
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")
    wait_for("no consumer group of the resource left",
             lambda: not {f"wml-{old}", f"wml-{new}"} & wml_groups(env.kafka), timeout=30)
    # The audit trail read back: each of the two deployments created once and deleted once, by the user of
    # the Secret the rotation changed (what a stop or start between was is the hand-over's business).
    trail = audit_trail(env, k8s_api)
    for deployment in (old, new):
        changes = [r["event"] for r in trail if r.get("deployment_id") == deployment]
        assert (changes[0], changes[-1]) == ("deployment.created", "deployment.deleted"), changes
        assert changes.count("deployment.created") == changes.count("deployment.deleted") == 1, changes
    assert all(r["user"] == env.user.username for r in trail if r["event"].startswith("deployment."))


def test_created_stopped_consumes_nothing_until_running(stream_env: StreamEnv, operator: WMLOperator,
                                                         kubectl: Kubectl, k8s_api: k8s.ApiClient,
                                                         output: Output) -> None:
    env, ns = stream_env, stream_env.namespace
    keys = [f"s{i}" for i in range(300)]
    produce(env, keys)
    kubectl("apply", "-f", "-", input=env.manifest(state="STOPPED"))
    ready(kubectl, ns)
    assert status(k8s_api, env)["wmlStatus"] == "STOPPED"
    assert output.drain(5.0) == 0
    assert not events(kubectl, ns, "StreamRanBriefly")
    kubectl("patch", "sdep", "tweets", "-n", ns, "--type=merge", "-p", '{"spec": {"state": "RUNNING"}}')
    scored(output, keys)
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")


def test_starting_offsets_latest_skips_what_came_before(stream_env: StreamEnv, operator: WMLOperator,
                                                        kubectl: Kubectl, k8s_api: k8s.ApiClient,
                                                        output: Output) -> None:
    env, ns = stream_env, stream_env.namespace
    produce(env, [f"old{i}" for i in range(50)])
    spec = json.loads(env.manifest())["spec"]
    spec["input"]["startingOffsets"] = "latest"
    kubectl("apply", "-f", "-", input=env.manifest(input=spec["input"]))
    ready(kubectl, ns)
    fresh = [f"new{i}" for i in range(50)]
    produce(env, fresh)
    scored(output, fresh)
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")


def test_a_model_typo_keeps_the_stream_and_the_fix_hands_over(stream_env: StreamEnv, operator: WMLOperator,
                                                               kubectl: Kubectl, k8s_api: k8s.ApiClient,
                                                               output: Output) -> None:
    env, ns = stream_env, stream_env.namespace
    first, old = streaming(env, kubectl, k8s_api, output, 100)
    kubectl("patch", "sdep", "tweets", "-n", ns, "--type=merge", "-p",
            '{"spec": {"modelId": "00000000-0000-4000-8000-00000000typo"}}')
    stalled = wait_for("Stalled ModelNotFound", lambda: (condition(sdep(k8s_api, ns, "tweets"), "Stalled") or {})
                       .get("reason") == "ModelNotFound", timeout=60)
    assert stalled
    assert (status(k8s_api, env)["deploymentId"], status(k8s_api, env)["wmlStatus"]) == (old, "RUNNING")
    assert wml(env).get_instance_deployment(old).status == "RUNNING"
    during = [f"b{i}" for i in range(50)]
    produce(env, during)
    scored(output, first + during)  # the old stream still scores
    # The fix (here: the second model, a model change) re-creates it with the hand-over.
    kubectl("patch", "sdep", "tweets", "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"modelId": THREE_CLASSES}}))
    new = new_deployment(k8s_api, env, old)
    ready(kubectl, ns)
    after = [f"c{i}" for i in range(50)]
    produce(env, after)
    scored(output, first + during + after)
    labels = {r["id"][0]: r["prediction"] for r in output.records}
    assert labels["c"] in ("POSITIVE", "NEGATIVE", "NEUTRAL")
    assert [d.id for d in wml(env).list_instance_deployments()] == [new]
    assert condition(sdep(k8s_api, ns, "tweets"), "Stalled") is None
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")


def test_an_output_topic_change_splits_the_stream_without_a_gap(stream_env: StreamEnv, operator: WMLOperator,
                                                                 kubectl: Kubectl, k8s_api: k8s.ApiClient,
                                                                 kafka_topic: Callable[..., str],
                                                                 output: Output) -> None:
    env, ns = stream_env, stream_env.namespace
    first, old = streaming(env, kubectl, k8s_api, output, 100)
    second_topic = kafka_topic("sentiment2")
    spec = json.loads(env.manifest())["spec"]
    kubectl("apply", "-f", "-", input=env.manifest(output={**spec["output"], "topic": second_topic}))
    new_deployment(k8s_api, env, old)
    ready(kubectl, ns)
    later = [f"b{i}" for i in range(100)]
    produce(env, later)
    moved = Output(StreamEnv(ns, env.input_topic, second_topic, env.user, env.service, env.kafka))
    try:
        scored(moved, later)
    finally:
        moved.close()
    scored(output, first)  # nothing more on the old topic
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")


def test_an_endpoint_change_moves_the_stream_and_leaves_nothing_behind(
        stream_env: StreamEnv, operator: WMLOperator, kubectl: Kubectl, k8s_api: k8s.ApiClient, output: Output,
        make_wml_service: Callable[..., WMLService]) -> None:
    env, ns = stream_env, stream_env.namespace
    second = make_wml_service(WML_SERVER_KAFKA_UNREACHABLE_TIMEOUT="15")
    second.add_user(env.user.username, env.user.instance_id, env.user.password)
    first, old = streaming(env, kubectl, k8s_api, output, 100)
    kubectl("patch", "sdep", "tweets", "-n", ns, "--type=merge", "-p",
            json.dumps({"spec": {"wml": {"url": second.url, "credentialsSecretRef": {"name": "wml"}}}}))
    new = new_deployment(k8s_api, env, old)
    ready(kubectl, ns)
    assert status(k8s_api, env)["endpoint"]["url"] == second.url
    assert wml(env).list_instance_deployments() == []  # 0 left on the old endpoint
    assert not events(kubectl, ns, "DeletedBehindOurBack")
    later = [f"b{i}" for i in range(100)]
    produce(env, later)
    scored(output, first + later)
    moved = StreamEnv(ns, env.input_topic, env.output_topic, env.user, second, env.kafka)
    assert [d.id for d in wml(moved).list_instance_deployments()] == [new]
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=60s")
    assert wml(moved).list_instance_deployments() == []

