"""Requests per minute per caller (WML_SERVER_RATE_LIMIT, and WML_SERVER_TOKEN_RATE_LIMIT for token requests per
client address): a token bucket each, refused with 429 and Retry-After, as the original answered
(`rate_limit_exceeded`)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from wml_server.errors import APIError

# Buckets that have refilled are forgotten once there are this many: callers named by the client (a username
# in a token request) must not make the table grow without end.
_PRUNE_AT = 10_000


class RateLimiter:
    """`per_minute` requests a minute per key, in bursts of up to `per_minute` (a full bucket)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, *,
                 what: str = "requests") -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.per_minute = per_minute
        self.what = what  # named in the refusal, so a client can tell which limit it ran into
        self._rate = per_minute / 60.0  # tokens a second
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def wait(self, key: str) -> float:
        """Takes one request for `key`: 0.0 if it may go now, else the seconds until it may."""
        with self._lock:
            now = self._clock()
            tokens, since = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - since) * self._rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > _PRUNE_AT:
                    self._prune(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self._rate

    def check(self, key: str) -> None:
        """Raises the 429 for `key` when it has no request left."""
        wait = self.wait(key)
        if wait > 0:
            raise APIError(429, "rate_limit_exceeded",
                           f"Rate limit of {self.per_minute} {self.what} per minute exceeded; retry after "
                           f"{math.ceil(wait)} s.", {"Retry-After": str(math.ceil(wait))})

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        full = [k for k, (tokens, since) in self._buckets.items()
                if tokens + (now - since) * self._rate >= self.per_minute]
        for key in full:
            del self._buckets[key]
