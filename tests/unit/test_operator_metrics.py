"""The operator's gauge of resources by WML status, as passes in many threads update it all at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from wml_operator.metrics import Metrics
from wml_operator.resources import Resources


def shown(metrics: Metrics) -> dict[str, float]:
    return {s.labels["wml_status"]: s.value for s in metrics.resources.collect()[0].samples}


def test_resources_by_status_from_many_threads() -> None:
    """1,000 resources at once (a burst of creates): no pass fails on the count, and the count is right; a
    resource forgotten is no longer counted."""
    metrics = Metrics()
    resources = Resources(5.0, 30.0, on_status=metrics.status_changed)
    uids = [f"metrics-test-{i}" for i in range(1000)]
    for uid in uids:
        resources.track("ADDED", {"metadata": {"uid": uid, "namespace": "ns", "generation": 1}})
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda uid: resources.set_wml_status(uid, "RUNNING"), uids))
        list(pool.map(lambda uid: resources.set_wml_status(uid, "STOPPED"), uids[:300]))
    assert shown(metrics) == {"INITIALIZING": 0, "RUNNING": 700, "STOPPED": 300, "FAILED": 0, "NONE": 0}
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(resources.forget, uids))
    assert set(shown(metrics).values()) == {0}
