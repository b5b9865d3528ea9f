"""The service's settings: every one a command-line flag with an environment variable as its default."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 9443
    data_dir: Path = Path("./wml-data")
    token_ttl_seconds: int = 8 * 3600
    signing_key_file: Path | None = None
    deployment_limit: int = 100
    plan: str = "lite"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    run_streams: bool = True
    kafka_unreachable_timeout: float = 30.0
    public_url: str | None = None
    log_level: str = "info"
    rate_limit: int = 0

    @property
    def database(self) -> Path:
        return self.data_dir / "wml.sqlite3"

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key_file or self.data_dir / "signing.key"


# (flag, env var, help) for each setting; the env var is the flag's default.
_DOCS: dict[str, tuple[str, str]] = {
    "host": ("WML_SERVER_HOST", "address to bind; loopback unless you mean to expose it"),
    "port": ("WML_SERVER_PORT", "TCP port"),
    "data_dir": ("WML_SERVER_DATA_DIR", "folder for the SQLite database and the token signing key"),
    "token_ttl_seconds": ("WML_SERVER_TOKEN_TTL", "lifetime of issued tokens, in seconds (8 h as the original)"),
    "signing_key_file": ("WML_SERVER_SIGNING_KEY_FILE",
                         "file holding the HS256 key that signs tokens (made on first start when missing; "
                         "default DATA_DIR/signing.key)"),
    "deployment_limit": ("WML_SERVER_DEPLOYMENT_LIMIT", "deployments allowed per instance (the plan limit)"),
    "plan": ("WML_SERVER_PLAN", "plan name reported by the instance and in plan-limit errors"),
    "tls_cert": ("WML_SERVER_TLS_CERT", "PEM certificate: serve HTTPS (with --tls-key)"),
    "tls_key": ("WML_SERVER_TLS_KEY", "PEM private key for --tls-cert"),
    "run_streams": ("WML_SERVER_RUN_STREAMS",
                    "true: run Kafka streams; false: accept deployments and report their status without "
                    "starting Kafka clients (for operator benchmarks at scale)"),
    "kafka_unreachable_timeout": ("WML_SERVER_KAFKA_UNREACHABLE_TIMEOUT",
                                  "seconds a broker may stay unreachable before the deployment is FAILED"),
    "public_url": ("WML_SERVER_PUBLIC_URL",
                   "base URL used in metadata.url and Location (default: taken from each request)"),
    "log_level": ("WML_SERVER_LOG_LEVEL", "debug, info, warning or error"),
    "rate_limit": ("WML_SERVER_RATE_LIMIT",
                   "requests a minute per user (calls with a token) and per client address (token requests), "
                   "in bursts of up to that many; more get 429 rate_limit_exceeded with Retry-After; 0: no limit"),
}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Settings()
    for f in fields(Settings):
        env, help_text = _DOCS[f.name]
        default = getattr(defaults, f.name)
        kind: type | object = {int: int, float: float, bool: _bool}.get(type(default), str)
        if f.name in ("data_dir", "signing_key_file", "tls_cert", "tls_key"):
            kind = Path
        raw = os.environ.get(env)
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, type=kind,  # type: ignore[arg-type]
            default=kind(raw) if raw is not None and callable(kind) else default,
            help=f"{help_text} [env {env}; default {default}]",
        )


def from_namespace(ns: argparse.Namespace) -> Settings:
    settings = Settings(**{f.name: getattr(ns, f.name) for f in fields(Settings)})
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise SystemExit("error: --tls-cert and --tls-key go together")
    return settings
