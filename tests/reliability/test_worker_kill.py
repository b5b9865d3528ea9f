"""kill -9 of the WML service's scoring workers while a stream runs with traffic (issue 17).

A stream of the built-in model scores in WML_SERVER_SCORING_WORKERS worker processes of the service (here 2).
Each round kills one of them, or all of them, at a random moment while records flow: the batch they held is not
produced, the stream reconnects with new clients and new workers, and reads again from the committed offsets.
Every record sent before, during and after is scored exactly once; the deployment stays RUNNING and the resource
Ready the whole time (the reconnect takes well under a poll interval); then the service itself is killed with
kill -9, and its workers must die with it (PR_SET_PDEATHSIG), none left behind.

Records are counted as in test_platform_faults (idempotent sender, read_committed reader counting offsets).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.conftest import Figures
from tests.reliability.conftest import count
from tests.reliability.test_platform_faults import Scores, Sender, Tally, Watcher, chain, converged, sdeps
from tests.support import alive, children_running
from wml_localplatform import KafkaInfo
from wml_localplatform.faultproxy import FaultProxy
from wml_localplatform.wmloperator import WMLOperator
from wml_localplatform.wmlservice import WMLService

Kubectl = Callable[..., Any]
WORKER = b"wml_server.engine.score_worker"
WORKERS = 2


def scoring_workers(service_pid: int) -> list[int]:
    return children_running(service_pid, WORKER)


def wait_workers(service_pid: int, avoid: set[int], timeout: float = 60.0) -> list[int]:
    """The service's workers once it runs WORKERS of them and none of `avoid`."""
    deadline = time.monotonic() + timeout
    while True:
        pids = scoring_workers(service_pid)
        if len(pids) == WORKERS and not set(pids) & avoid:
            return pids
        assert time.monotonic() < deadline, f"the service runs workers {pids}, killed ones {sorted(avoid)}"
        time.sleep(0.1)


@pytest.mark.timeout(count(900, 400))
def test_scoring_workers_killed_mid_stream(kafka: KafkaInfo, kafka_topic: Callable[..., str], fault_namespace: str,
                                           k8s_api: k8s.ApiClient, kubectl: Kubectl,
                                           make_wml_service: Callable[..., WMLService],
                                           fault_proxy: Callable[[WMLService], FaultProxy],
                                           start_operator: Callable[..., WMLOperator], figures: Figures) -> None:
    rng = random.Random(os.environ.get("WSO_KILL9_SEED") or None)  # noqa: S311 - a test's choices, not crypto
    ns = fault_namespace
    service = make_wml_service(WML_SERVER_SCORING_WORKERS=str(WORKERS))
    c = chain(ns, k8s_api, service, fault_proxy, start_operator, kafka,
              (kafka_topic("tweets", partitions=2), kafka_topic("sentiment")))
    kubectl("apply", "-f", "-", input=c.env.manifest(name="tweets"))
    converged(k8s_api, c, "before the kills")
    deployment_id = sdeps(k8s_api, ns)["tweets"]["status"]["deploymentId"]
    assert service.proc is not None
    pid = service.proc.pid
    sender, scores = Sender(kafka, c.env.input_topic), Scores(kafka, c.env.output_topic)
    watcher = Watcher(k8s_api, ns, "tweets")
    tally, killed, recoveries = Tally(), set[int](), list[float]()
    rounds = count(10, 3)
    try:
        sender.send("a-", 300)
        scores.wait_all(sender.acked, timeout=120)
        assert set(sender.acked) <= scores.by_key.keys(), "the stream did not score records before the kills"
        for i in range(rounds):
            first = len(sender.acked)
            workers = wait_workers(pid, killed)
            sender.start(f"r{i}-", per_second=400)
            time.sleep(0.3 + 1.5 * rng.random())
            victims = workers if i % 3 == 2 else [rng.choice(workers)]  # sometimes every worker at once
            at = time.monotonic()
            for victim in victims:
                os.kill(victim, signal.SIGKILL)
            killed.update(victims)
            wait_workers(pid, killed)
            recoveries.append(time.monotonic() - at)
            time.sleep(1.0)
            sender.stop()
            keys = sender.acked[first:]
            scores.wait_all(keys)
            tally.add(keys, scores.by_key)
            assert tally.missing == 0, f"round {i + 1}: {tally.missing} records lost, e.g. {tally.missing_keys}"
            assert tally.duplicated == 0, f"round {i + 1}: {tally.duplicated} records scored twice"
        state = converged(k8s_api, c, "after the kills")
        assert state.duplicates == state.orphans == 0
        seen = watcher.stop()
        assert seen == ["Ready/Running"], f"the resource did not stay Ready while workers were killed: {seen}"
        assert sdeps(k8s_api, ns)["tweets"]["status"]["deploymentId"] == deployment_id, "a new deployment"
        assert not scores.bad, f"records without a prediction: {scores.bad[:5]}"

        # The service killed in turn: its workers die with it, none is left behind.
        last = scoring_workers(pid)
        assert len(last) == WORKERS
        service.kill()
        deadline = time.monotonic() + 10
        while [p for p in last if alive(p)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in last if alive(p)], "scoring workers outlived the service"
        # Back up, so the teardown's deletion reaches WML: the deployment and its consumer group go, instead of
        # a finalizer waiting a minute on a dead service and a group left for the topic's deletion to drop.
        service.start()
    finally:
        watcher.stop()
        scores.close()
    figures.add("faults", fault=f"{WORKERS} scoring workers, one or all killed with kill -9 while records flow",
                injected=rounds, recovered=len(recoveries), shown="Ready/Running throughout",
                recovery_s=round(max(recoveries), 1), duplicates=0, orphans=0, **tally.columns())
