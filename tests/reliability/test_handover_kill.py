"""Re-creates while records flow, with a kill -9 at any point of the hand-over (issue 14).

One resource streams a 2-partition topic while a sender keeps producing. Each trial rotates the Kafka Secret
(a key the stream does not use, as a credentials rotation changes it: the deployment is re-created and its
stream handed over: checked, drained, switched, retired), and kills with -9 either the operator or the WML
service at a point chosen with a seeded random.Random: right after the n-th WML write of the switch (the
proxy's record: PATCH STOPPED, POST, DELETE), or after a random delay. The killed process is started again;
the namespace must converge to one deployment, built from the new Secret. At the end every record the sender
got acknowledged is read back from the output (read_committed): 0 lost, 0 scored twice, and no consumer
group of a deleted deployment is left on the broker.

WSO_KILL9_SEED=<n> repeats a run's choices.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.conftest import Figures, wml_groups
from tests.reliability.conftest import count
from tests.reliability.test_operator_kill import gone
from tests.reliability.test_platform_faults import Chain, Scores, Sender, Tally, chain, converged, sdeps
from wml_localplatform import KafkaInfo
from wml_localplatform.faultproxy import FaultProxy, Seen
from wml_localplatform.wmloperator import WMLOperator
from wml_localplatform.wmlservice import WMLService

Kubectl = Callable[..., Any]
WRITES = {"PATCH": "stop", "POST": "create", "DELETE": "delete"}  # the switch's WML writes, in their order


def switch_writes(proxy: FaultProxy, since: float) -> list[Seen]:
    """The WML writes since `since` (a dry run checks, it writes nothing)."""
    return [s for s in proxy.requests(since=since)
            if s.method in WRITES and "/deployments" in s.path and "dry_run" not in s.path]


def deployment_of(k8s_api: k8s.ApiClient, c: Chain) -> str:
    return str(sdeps(k8s_api, c.env.namespace)["tweets"]["status"]["deploymentId"])


@pytest.mark.timeout(count(2400, 600))
def test_hand_over_survives_kill9_while_records_flow(kafka: KafkaInfo, kafka_topic: Callable[..., str],
                                                     fault_namespace: str, k8s_api: k8s.ApiClient, kubectl: Kubectl,
                                                     make_wml_service: Callable[..., WMLService],
                                                     fault_proxy: Callable[[WMLService], FaultProxy],
                                                     start_operator: Callable[..., WMLOperator],
                                                     figures: Figures) -> None:
    ns = fault_namespace
    seed = int(os.environ.get("WSO_KILL9_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)  # noqa: S311 - choices of a test, not crypto
    c = chain(ns, k8s_api, make_wml_service(), fault_proxy, start_operator, kafka,
              (kafka_topic("tweets", partitions=2), kafka_topic("sentiment")))
    kubectl("apply", "-f", "-", input=c.env.manifest(name="tweets"))
    converged(k8s_api, c, "before the first trial")
    sender, scores = Sender(kafka, c.env.input_topic), Scores(kafka, c.env.output_topic)
    retired: list[str] = []
    points: dict[str, int] = {}
    recoveries: list[float] = []
    trials = count(24, 4)
    try:
        sender.start("k-", per_second=100)
        time.sleep(2.0)
        for number in range(1, trials + 1):
            old = deployment_of(k8s_api, c)
            victim = "service" if number % 3 == 0 else "operator"
            at_call = rng.randint(1, 3) if rng.random() < 0.7 else None
            delay = None if at_call else 2.0 * rng.random()
            started = time.monotonic()
            kubectl("patch", "secret", "kafka", "-n", ns, "--type=merge", "-p",
                    json.dumps({"stringData": {"kafka_rest_url": f"https://rest-{number}.example"}}))
            if at_call is not None:
                deadline = started + 60
                while len(switch_writes(c.proxy, started)) < at_call:
                    assert time.monotonic() < deadline, f"seed {seed} trial {number}: no WML write {at_call}"
                    time.sleep(0.005)
            else:
                time.sleep(delay or 0.0)
            done = [WRITES[s.method] for s in switch_writes(c.proxy, started)]
            point = f"{victim} after {'+'.join(done) or 'no write'}"
            points[point] = points.get(point, 0) + 1
            killed = time.monotonic()
            if victim == "operator":
                c.operator.kill()
                gone(c.operator)
                c.operator.start()
            else:
                c.service.kill()
                c.service.start()
            # A Secret change moves no generation: Ready as before the kill is not yet the re-create's.
            deadline = time.monotonic() + 120
            while deployment_of(k8s_api, c) == old:
                assert time.monotonic() < deadline, f"seed {seed} trial {number} ({point}): not re-created"
                time.sleep(0.2)
            state = converged(k8s_api, c, f"seed {seed} trial {number} ({point})")
            recoveries.append(time.monotonic() - killed)
            assert state.duplicates == state.orphans == 0
            retired.append(old)
            print(f"seed {seed} trial {number}: {point}, converged in {recoveries[-1]:.1f} s")
        sender.stop()
        scores.wait_all(sender.acked)
        tally = Tally()
        tally.add(sender.acked, scores.by_key)
        assert tally.missing == 0, f"seed {seed}: {tally.missing} records lost, e.g. {tally.missing_keys}"
        assert tally.duplicated == 0, f"seed {seed}: {tally.duplicated} records scored twice"
        assert not scores.bad, f"records without a prediction: {scores.bad[:5]}"
        deadline = time.monotonic() + 60
        while (left := wml_groups(kafka) & {f"wml-{d}" for d in retired}) and time.monotonic() < deadline:
            time.sleep(1.0)
        assert not left, f"consumer groups of deleted deployments left on the broker: {sorted(left)}"
        figures.add("kill9_handover", trials=trials, seed=seed, kill_points=dict(sorted(points.items())),
                    **tally.columns(), groups_left=len(left),
                    median_recovery_s=round(sorted(recoveries)[len(recoveries) // 2], 1),
                    max_recovery_s=round(max(recoveries), 1))
    finally:
        sender.stop()
        scores.close()
