"""The operator's gauge of resources by WML status, as kopf's handler threads update it all at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from wml_operator import metrics


def shown() -> dict[str, float]:
    return {s.labels["wml_status"]: s.value for s in metrics.RESOURCES.collect()[0].samples}


def test_resources_by_status_from_many_threads() -> None:
    """1,000 resources at once (a burst of creates): no pass fails on the count, and the count is right."""
    uids = [f"metrics-test-{i}" for i in range(1000)]
    before = shown()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda uid: metrics.set_resource_status(uid, "RUNNING"), uids))
        list(pool.map(lambda uid: metrics.set_resource_status(uid, "STOPPED"), uids[:300]))
    after = shown()
    assert after["RUNNING"] - before.get("RUNNING", 0) == 700
    assert after["STOPPED"] - before.get("STOPPED", 0) == 300
    for uid in uids:
        metrics.set_resource_status(uid, None)
    assert shown() == before
