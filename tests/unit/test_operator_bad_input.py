"""Generated bad input (hypothesis): every spec or Secret mistake ends Stalled with a specific reason, makes
0 WML calls, never crashes the reconciler and never echoes a secret."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests.badinput import REASONS, Case, expected_reason, mutated


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_bad_input_stalls_without_calling_wml(case: Case) -> None:
    spec, secrets, _ = case
    reason, calls = expected_reason(spec, secrets)
    if reason is None:
        # Only input the operator accepted may reach WML (here: a dead port, so a transient error).
        assert calls, "a transient error without any WML call"
        return
    assert reason in REASONS
    assert calls == []
