"""kstatus conditions: Ready always, Reconciling/Stalled only when true, transition times kept."""

from __future__ import annotations

from wml_operator.conditions import compute


def test_transition_time_changes_only_with_status() -> None:
    first = compute([], ready=False, reconciling=True, stalled=False, reason="Creating", message="m", generation=1,
                    now="T1")
    assert [c["type"] for c in first] == ["Ready", "Reconciling"]
    assert first[0]["lastTransitionTime"] == "T1"
    same = compute(first, ready=False, reconciling=True, stalled=False, reason="Starting", message="m2",
                   generation=1, now="T2")
    assert same[0]["lastTransitionTime"] == "T1"  # reason changed, status did not
    assert same[0]["reason"] == "Starting"
    ready = compute(same, ready=True, reconciling=False, stalled=False, reason="Running", message="ok",
                    generation=2, now="T3")
    assert [c["type"] for c in ready] == ["Ready"]  # nothing abnormal, nothing else
    assert (ready[0]["status"], ready[0]["lastTransitionTime"], ready[0]["observedGeneration"]) == ("True", "T3", 2)


def test_stalled_replaces_reconciling_and_foreign_conditions_are_kept() -> None:
    foreign = {"type": "ArgoHealthy", "status": "True"}
    out = compute([foreign], ready=False, reconciling=True, stalled=True, reason="SecretNotFound", message="m",
                  generation=1, now="T")
    assert [c["type"] for c in out] == ["Ready", "Stalled", "ArgoHealthy"]
