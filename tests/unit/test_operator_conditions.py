"""kstatus conditions: Ready always, Reconciling/Stalled only when true, transition times kept, each condition
with its own reason and message."""

from __future__ import annotations

from wml_operator.conditions import Says, compute, is_true


def test_transition_time_changes_only_with_status() -> None:
    first = compute([], ready=False, ready_says=Says("Creating", "m"), reconciling=Says("Creating", "m"),
                    generation=1, now="T1")
    assert [c["type"] for c in first] == ["Ready", "Reconciling"]
    assert first[0]["lastTransitionTime"] == "T1"
    same = compute(first, ready=False, ready_says=Says("Starting", "m2"), reconciling=Says("Starting", "m2"),
                   generation=1, now="T2")
    assert same[0]["lastTransitionTime"] == "T1"  # reason changed, status did not
    assert same[0]["reason"] == "Starting"
    ready = compute(same, ready=True, ready_says=Says("Running", "ok"), generation=2, now="T3")
    assert [c["type"] for c in ready] == ["Ready"]  # nothing abnormal, nothing else
    assert (ready[0]["status"], ready[0]["lastTransitionTime"], ready[0]["observedGeneration"]) == ("True", "T3", 2)


def test_stalled_replaces_reconciling_and_foreign_conditions_are_kept() -> None:
    foreign = {"type": "ArgoHealthy", "status": "True"}
    out = compute([foreign], ready=False, ready_says=Says("SecretNotFound", "m"), reconciling=Says("x", "y"),
                  stalled=Says("SecretNotFound", "m"), generation=1, now="T")
    assert [c["type"] for c in out] == ["Ready", "Stalled", "ArgoHealthy"]


def test_conditions_say_different_things_where_they_differ() -> None:
    out = compute([], ready=True, ready_says=Says("Running", "the stream is RUNNING"),
                  reconciling=Says("WMLUnavailable", "retrying in 4 s"), generation=1, now="T")
    assert [(c["type"], c["reason"]) for c in out] == [("Ready", "Running"), ("Reconciling", "WMLUnavailable")]
    assert is_true(out, "Ready") is True
    assert is_true(out, "Reconciling") is True
    assert is_true(out, "Stalled") is None
