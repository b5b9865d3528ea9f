"""The operator's settings, from environment variables (documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from wml_operator.secrets import Defaults


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        raise SystemExit(f"error: {name} must be a number of seconds, got {raw!r}") from None


@dataclass(frozen=True)
class OperatorSettings:
    defaults: Defaults = field(default_factory=Defaults)
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    poll_fast: float = 5.0
    poll_slow: float = 30.0
    log_format: str = "text"
    metrics_address: str = "127.0.0.1:9090"
    health_address: str = "127.0.0.1:8080"
    wml_timeout: float = 30.0

    @classmethod
    def from_env(cls) -> OperatorSettings:
        env = os.environ.get
        namespaces = tuple(n.strip() for n in (env("WML_OPERATOR_NAMESPACES") or "").split(",") if n.strip())
        log_format = env("WML_OPERATOR_LOG_FORMAT", "text")
        if log_format not in ("text", "json"):
            raise SystemExit(f"error: WML_OPERATOR_LOG_FORMAT must be text or json, got {log_format!r}")
        creds = env("WML_OPERATOR_WML_CREDENTIALS_SECRET") or None
        if creds and "/" not in creds:
            raise SystemExit("error: WML_OPERATOR_WML_CREDENTIALS_SECRET must be namespace/name")
        return cls(
            defaults=Defaults(url=env("WML_OPERATOR_WML_URL") or None,
                              instance_id=env("WML_OPERATOR_WML_INSTANCE_ID") or None, credentials_secret=creds),
            namespaces=namespaces,
            poll_fast=_float("WML_OPERATOR_POLL_FAST_SECONDS", 5.0),
            poll_slow=_float("WML_OPERATOR_POLL_SLOW_SECONDS", 30.0),
            log_format=log_format,
            metrics_address=env("WML_OPERATOR_METRICS_ADDRESS", "127.0.0.1:9090"),
            health_address=env("WML_OPERATOR_HEALTH_ADDRESS", "127.0.0.1:8080"),
            wml_timeout=_float("WML_OPERATOR_WML_TIMEOUT_SECONDS", 30.0),
        )
