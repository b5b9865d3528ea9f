"""Generated bad input (hypothesis): every spec or Secret mistake ends Stalled with the reason the documented
rules give it, makes 0 WML calls, never crashes the reconciler and never echoes a secret."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests.badinput import REASONS, Case, expected_reasons, mutated, reconciled_reason


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_bad_input_stalls_with_its_reason_without_calling_wml(case: Case) -> None:
    spec, secrets, mutation = case
    reason, calls = reconciled_reason(spec, secrets)
    assert reason in expected_reasons(spec, secrets, mutation), (mutation, mutation.where, reason)
    if reason is None:
        # Only input the operator accepted may reach WML (here: a dead port, so a transient error).
        assert calls, "a transient error without any WML call"
        return
    assert reason in REASONS
    assert calls == []
