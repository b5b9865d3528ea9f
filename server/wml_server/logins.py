"""Token requests in /metrics (issue 21: failed logins are counted): tokens issued, and token requests refused
by reason. An alert on `rate(wml_token_requests_failed_total{reason="bad_credentials"}[5m])` sees password
guessing; `reason="rate_limited"` sees the limit at work (or set too low for a legitimate client).

No username or address label: anyone can send any name, so the series would grow without end, and a name
someone mistyped as their password must not end up in a time-series database."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

# The error codes a token request can be refused with, by what they say about the request.
REASONS = {
    "invalid_credentials": "bad_credentials",  # unknown user or wrong password: what guessing produces
    "missing_authorization": "bad_request",  # no basic auth at all
    "invalid_authorization": "bad_request",  # not decodable as basic auth
    "invalid_token_format": "bad_token",  # a refresh (PUT) with something that is not a JWT
    "invalid_authorization_token": "bad_token",  # not ours, or its user is gone
    "expired_authorization_token": "bad_token",  # past the refresh grace
    "rate_limit_exceeded": "rate_limited",  # refused before the password was even checked
}
OTHER = "other"


class LoginMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.issued_total = Counter(
            "wml_tokens_issued", "Tokens issued: logins with basic auth and refreshes.", registry=registry)
        self.failed_total = Counter(
            "wml_token_requests_failed", "Token requests refused, by reason: bad_credentials (unknown user or "
            "wrong password), bad_request (no or malformed basic auth), bad_token (a refresh with a token that is "
            "not valid), rate_limited (WML_SERVER_TOKEN_RATE_LIMIT or WML_SERVER_RATE_LIMIT), other.",
            ["reason"], registry=registry)
        for reason in {*REASONS.values(), OTHER}:  # every series from 0: rate() and alerts see the first one
            self.failed_total.labels(reason)

    def issued(self) -> None:
        self.issued_total.inc()

    def refused(self, code: str) -> None:
        self.failed_total.labels(REASONS.get(code, OTHER)).inc()
