"""The service's settings, once: one typed class read from `WML_SERVER_*` environment variables, and the
command-line flags (`--data-dir`, ...) and their `--help` generated from the same fields. A flag given on the
command line wins over the variable, which wins over the default.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wml_server import audit

ENV_PREFIX = "WML_SERVER_"
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cpu_max: Path = CPU_MAX) -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup v2 CPU quota when it has one (a
    container's CPU limit: affinity shows every core of the node, and a worker per core there would compete
    for a quota of one or two)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 CPU controller here: the affinity is all there is
    return cores
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid",
                                      populate_by_name=True)

    host: Annotated[str, Field(description="address to bind; loopback unless you mean to expose it")] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535, description="TCP port")] = 9443
    data_dir: Annotated[Path, Field(description="folder for the SQLite database (deployments, users, the token "
                                                "signing key) and users' models")] = Path("./wml-data")
    # The variable is WML_SERVER_TOKEN_TTL (as documented since the start), the flag --token-ttl-seconds.
    token_ttl_seconds: Annotated[int, Field(gt=0, validation_alias=f"{ENV_PREFIX}TOKEN_TTL",
                                            description="lifetime of issued tokens, in seconds "
                                                        "(8 h as the original)")] = 8 * 3600
    signing_key_file: Annotated[Path | None, Field(
        description="your own file holding the HS256 key that signs tokens (a mounted Secret: read as it is, "
                    "made when missing, never encrypted by the service); default: a key the service makes and "
                    "keeps in its database, encrypted by --key-file")] = None
    key_file: Annotated[Path | None, Field(
        description="file of Fernet keys (one a line; the first encrypts, all decrypt) that encrypt the "
                    "credentials the service stores; keep it apart from the data folder; required: make one "
                    "with `wml-server generate-key --key-file PATH`")] = None
    deployment_limit: Annotated[int, Field(ge=0, description="deployments allowed per instance "
                                                             "(the plan limit)")] = 100
    plan: Annotated[str, Field(description="plan name reported by the instance and in plan-limit errors")] = "lite"
    tls_cert: Annotated[Path | None, Field(description="PEM certificate: serve HTTPS (with --tls-key)")] = None
    tls_key: Annotated[Path | None, Field(description="PEM private key for --tls-cert")] = None
    tls_reload_seconds: Annotated[float, Field(
        gt=0, description="how often --tls-cert and --tls-key are checked for a renewed pair, which is then "
                          "served without a restart (a Secret volume's files change when cert-manager renews)")] = 30.0
    plain_http: Annotated[bool, Field(
        description="true: serve plain HTTP on a non-loopback --host (credentials and tokens then cross the "
                    "network unencrypted); without it the service refuses to serve a non-loopback address "
                    "without --tls-cert; loopback addresses serve plain HTTP without it")] = False
    run_streams: Annotated[bool, Field(
        description="true: run Kafka streams; false: accept deployments and report their status without "
                    "starting Kafka clients (for operator benchmarks at scale)")] = True
    kafka_unreachable_timeout: Annotated[float, Field(
        gt=0, description="seconds a broker may stay unreachable before the deployment is FAILED")] = 30.0
    scoring_workers: Annotated[int, Field(
        default_factory=lambda: usable_cores(), ge=0,
        description="worker processes that score a stream of a built-in model, each a part of every "
                    "batch; default: the cores this process may use (its CPU affinity, within its cgroup's CPU "
                    "quota: a pod's limit); 0: score in the service's own process")]
    spark_masters: Annotated[str, Field(
        description="Spark masters streams may run on, separated by commas (spark://host:port, local[N]); a "
                    "deployment whose X-Spark-Service-Instance names another Spark master is refused with 400 "
                    "spark_master_not_allowed; other cluster_master_url values run on the built-in engine")] = ""
    spark_jars: Annotated[str, Field(
        description="the Spark Kafka connector's jars for Spark streams: paths separated by commas, or a folder "
                    "of jars (make platform-build caches them)")] = ""
    spark_executor_memory: Annotated[str, Field(description="memory of each Spark stream's executors")] = "1g"
    spark_cores_per_stream: Annotated[int, Field(
        ge=0, description="cores each Spark stream may take on its cluster (spark.cores.max); 0: all that are "
                          "free")] = 0
    spark_java_options: Annotated[str, Field(
        description="JVM options of each Spark stream's driver and executors (e.g. -XX:TieredStopAtLevel=1: "
                    "a faster start, slower steady state)")] = ""
    spark_trigger_seconds: Annotated[float, Field(
        ge=0, description="seconds between a Spark stream's micro-batches; 0: each as soon as the last "
                          "committed")] = 0.0
    public_url: Annotated[str | None, Field(
        description="base URL used in metadata.url and Location (default: taken from each request)")] = None
    log_level: Annotated[LogLevel, Field(description="debug, info, warning or error")] = "info"
    rate_limit: Annotated[int, Field(
        ge=0, description="requests a minute per user (calls with a token) and per client address (token "
                          "requests), in bursts of up to that many; more get 429 rate_limit_exceeded with "
                          "Retry-After; 0: no limit")] = 0
    token_rate_limit: Annotated[int, Field(
        ge=0, description="token requests (either token path, GET or the PUT refresh) a minute per client "
                          "address, in bursts of up to that many: password guessing is refused with 429 "
                          "rate_limit_exceeded and Retry-After before the password is checked, and a correct "
                          "login from that address waits too; 0: no limit. The address is the TCP peer's: behind "
                          "a proxy every client shares the proxy's (see --trusted-proxies)")] = 60
    trusted_proxies: Annotated[str, Field(
        description="reverse proxies (addresses or CIDR networks, separated by commas; * for any) whose "
                    "X-Forwarded-For and X-Forwarded-Proto the service believes: the client address the token "
                    "rate limit counts by is then the one the proxy saw. Default none: the TCP peer's address, "
                    "which no header can change")] = ""

    audit_log: Annotated[str, Field(
        description="where the audit trail goes, one JSON line per change (tokens issued and refused, "
                    "deployments, models, users): a file (0600, appended), or - for standard output; default: "
                    "audit.jsonl in the data folder")] = ""

    pickled_models: Annotated[bool, Field(
        description="true: take pickled scikit-learn models (as the v3 clients uploaded them; loaded only in "
                    "sandboxed worker processes); false: refuse them, skops's format only")] = True
    model_max_bytes: Annotated[int, Field(
        gt=0, description="largest model content an upload may stream, in bytes")] = 512 * 1024 * 1024
    model_sandbox: Annotated[bool, Field(
        description="true: users' models run only in workers sandboxed with Landlock (a kernel without it "
                    "fails their deployments); false: in plain worker processes (no sandbox)")] = True
    model_memory_limit_mb: Annotated[int, Field(
        gt=0, description="address space each model worker process may use, in MiB")] = 2048
    model_load_timeout: Annotated[float, Field(
        gt=0, description="seconds a model worker may take to start and load its model (the upload check and "
                          "each deployment's start); longer: refused at upload, or the deployment FAILED")] = 120.0
    model_predict_timeout: Annotated[float, Field(
        gt=0, description="seconds a model worker may take to score one batch; longer: the worker is killed and "
                          "its deployment FAILED with model_timeout")] = 60.0

    @field_validator("spark_masters")
    @classmethod
    def _masters(cls, value: str) -> str:
        from wml_server.spark.placement import parse_allowed

        return ",".join(parse_allowed(value))

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        for item in items:
            if item != "*":
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is not an IP address or network") from None
        return ",".join(items)

    @property
    def spark_master_list(self) -> tuple[str, ...]:
        from wml_server.spark.placement import parse_allowed

        return parse_allowed(self.spark_masters)

    @property
    def spark_jar_list(self) -> tuple[str, ...]:
        jars: list[str] = []
        for item in self.spark_jars.split(","):
            path = Path(item.strip())
            if not item.strip():
                continue
            jars += sorted(str(j) for j in path.glob("*.jar")) if path.is_dir() else [str(path)]
        return tuple(jars)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("signing_key_file", "key_file", "tls_cert", "tls_key", "public_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `WML_SERVER_TLS_CERT=` in a manifest or a shell means "not set", not a file named "".
        return None if value == "" else value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError(f"--tls-cert and --tls-key ({ENV_PREFIX}TLS_CERT and {ENV_PREFIX}TLS_KEY) go together")
        return self

    def exposure_problem(self) -> str | None:
        """Why `serve` must refuse these settings: plain HTTP where traffic leaves loopback, unless asked for.
        Only `serve` asks (add-user and the other commands run in the same image, with its 0.0.0.0)."""
        if self.tls_cert is not None or self.plain_http or is_loopback(self.host):
            return None
        return (f"{flag('host')} {self.host} is not a loopback address and no certificate is given: serve HTTPS "
                f"with {flag('tls_cert')} and {flag('tls_key')} ({env_var('tls_cert')}, {env_var('tls_key')}), "
                f"or accept plain HTTP on the network with {flag('plain_http')} true ({env_var('plain_http')}=true)")

    @property
    def database(self) -> Path:
        return self.data_dir / "wml.sqlite3"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def audit_target(self) -> Path | str:
        """The audit trail's file, or "-" (standard output)."""
        if self.audit_log == audit.STDOUT:
            return audit.STDOUT
        return Path(self.audit_log) if self.audit_log else self.data_dir / audit.DEFAULT_NAME


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves the machine. Anything else (0.0.0.0, ::, a name,
    an interface's address) may be reached from the network."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_var(name: str) -> str:
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else ENV_PREFIX + name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field. Flags not given stay out of the namespace, so the environment (read by Settings
    itself) fills them; values are strings here and typed by Settings, so a flag and its variable are
    checked alike."""
    group = parser.add_argument_group("settings (each flag's variable is its default)")
    for name, field in Settings.model_fields.items():
        shown = "DATA_DIR/audit.jsonl" if name == "audit_log" else \
            "unset" if field.default is None else field.default
        metavar = "true|false" if field.annotation is bool else None
        group.add_argument(flag(name), dest=name, default=argparse.SUPPRESS, metavar=metavar,
                           help=f"{field.description} [env {env_var(name)}; default {shown}]")


def from_namespace(ns: argparse.Namespace) -> Settings:
    """The settings, or SystemExit with a message naming the flag and the variable at fault."""
    given = {name: getattr(ns, name) for name in Settings.model_fields if hasattr(ns, name)}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SystemExit("error: " + "; ".join(_explain(e) for e in exc.errors(include_input=False))) from None


def _explain(error: Any) -> str:
    loc = [str(p) for p in error.get("loc", ())]
    by_env = {env_var(n): n for n in Settings.model_fields}
    name = by_env.get(loc[0], loc[0]) if loc else ""
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if name not in Settings.model_fields:
        return message
    return f"{flag(name)} ({env_var(name)}): {message}"
