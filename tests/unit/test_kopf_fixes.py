"""wml_operator.kopf_fixes: kopf serves a watched namespace that is terminating with content left, also when the
operator starts after the deletion began (issue 15: a namespace deleted while the operator was down)."""

from __future__ import annotations

from typing import Any

from kopf._cogs.structs import references
from kopf._core.reactor import observation

from wml_operator import handlers  # noqa: F401 - importing the handlers installs the fix


def terminating(name: str, remaining: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name, "deletionTimestamp": "2026-12-03T00:00:00Z"},
            "status": {"phase": "Terminating", "conditions": [
                {"type": "NamespaceContentRemaining", "status": str(remaining), "reason": "SomeResourcesRemain",
                 "message": "Some resources are remaining: streamingdeployments.wmlstream.dev has 1 resource"},
                {"type": "NamespaceDeletionDiscoveryFailure", "status": "False", "reason": "ResourcesDiscovered"}]}}


def test_a_terminating_namespace_found_at_start_up_is_served() -> None:
    insights = references.Insights()
    observation.revise_namespaces(insights=insights, namespaces=["team-*"],
                                  raw_bodies=[terminating("team-b"), {"metadata": {"name": "other"}}])
    assert insights.namespaces == {"team-b"}


def test_a_namespace_is_let_go_once_it_is_gone() -> None:
    insights = references.Insights()
    observation.revise_namespaces(insights=insights, namespaces=["team-b"], raw_bodies=[terminating("team-b")])
    observation.revise_namespaces(insights=insights, namespaces=["team-b"],
                                  raw_events=[{"type": "DELETED", "object": terminating("team-b", remaining=False)}])
    assert insights.namespaces == set()
