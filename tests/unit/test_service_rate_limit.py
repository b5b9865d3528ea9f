"""The service's rate limiter on a clock of its own: bursts, refill, keys apart, a bounded table."""

from __future__ import annotations

import pytest

from wml_server.errors import APIError
from wml_server.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_the_limit_passes_then_one_a_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock)  # one a second
    assert [limiter.wait("a") for _ in range(60)] == [0.0] * 60
    assert limiter.wait("a") == pytest.approx(1.0)
    clock.now += 0.5
    assert limiter.wait("a") == pytest.approx(0.5)  # a refused request takes nothing
    clock.now += 0.5
    assert limiter.wait("a") == 0.0
    assert limiter.wait("a") == pytest.approx(1.0)


def test_keys_do_not_share_a_bucket() -> None:
    limiter = RateLimiter(2, Clock())
    assert [limiter.wait("a"), limiter.wait("a")] == [0.0, 0.0]
    assert limiter.wait("a") > 0
    assert limiter.wait("b") == 0.0


def test_the_refusal_is_a_429_with_retry_after_in_whole_seconds() -> None:
    limiter = RateLimiter(1, Clock())
    limiter.check("a")
    with pytest.raises(APIError) as refused:
        limiter.check("a")
    assert (refused.value.status, refused.value.code) == (429, "rate_limit_exceeded")
    assert refused.value.headers == {"Retry-After": "60"}
    assert "1 requests per minute" in refused.value.message


def test_refilled_buckets_are_forgotten_when_the_table_grows() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock)
    for i in range(10_000):
        limiter.wait(f"user-{i}")
    clock.now += 120  # all of them full again
    limiter.wait("one more")
    assert len(limiter) <= 2


def test_no_limit_is_no_limiter() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)
