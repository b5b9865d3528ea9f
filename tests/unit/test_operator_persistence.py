"""kopf's last-handled copy of each resource, kept in its status: one write per change instead of two."""

from __future__ import annotations

import json
from typing import Any

import kopf

from wml_operator.persistence import KEY, PREFIX, StatusDiffBase

SPEC = {"state": "RUNNING", "modelId": "m1"}


def body(status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None) -> kopf.Body:
    return kopf.Body({"apiVersion": "wmlstream.dev/v1alpha1", "kind": "StreamingDeployment",
                      "metadata": {"name": "a", "namespace": "ns", "uid": "u1",
                                   "annotations": {"wmlstream.dev/poll-interval": "60", **(annotations or {})}},
                      "spec": SPEC, "status": status or {}})


def test_it_is_stored_in_the_status_only() -> None:
    storage = StatusDiffBase()
    b = body()
    patch = kopf.Patch()
    storage.store(body=b, patch=patch, essence=storage.build(body=b))
    assert set(patch) == {"status"}  # so kopf writes it with the status: no patch of the resource itself
    stored = json.loads(patch["status"]["kopf"][KEY])
    assert stored["spec"] == SPEC
    assert storage.fetch(body=body(status=dict(patch["status"]))) == stored


def test_a_resource_handled_by_an_older_version_is_not_new() -> None:
    """It carries the copy in kopf's annotation: read from there, and equal to what the resource is now."""
    storage = StatusDiffBase()
    current = storage.build(body=body())
    old = body(annotations={f"{PREFIX}/{KEY}": json.dumps(current)})
    assert storage.fetch(body=old) == current
    assert storage.build(body=old) == current  # the annotation itself is not part of what is compared


def test_the_status_copy_wins_over_a_stale_annotation() -> None:
    storage = StatusDiffBase()
    stale = {"spec": {"state": "STOPPED"}}
    fresh = storage.build(body=body())
    both = body(status={"kopf": {KEY: json.dumps(fresh)}}, annotations={f"{PREFIX}/{KEY}": json.dumps(stale)})
    assert storage.fetch(body=both) == fresh


def test_a_new_resource_has_none() -> None:
    assert StatusDiffBase().fetch(body=body()) is None
