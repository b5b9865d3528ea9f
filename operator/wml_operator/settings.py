"""The operator's settings: one typed source for environment variables, defaults and `--help`.

Every field is read from `WML_OPERATOR_<FIELD>` (e.g. WML_OPERATOR_POLL_FAST_SECONDS); `python -m wml_operator
--help` lists them with their descriptions and defaults, generated from this class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from wml_operator.secrets import Defaults

ENV_PREFIX = "WML_OPERATOR_"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    wml_url: Annotated[str | None, Field(
        description="default WML base URL, for resources that name none (nor does their credentials Secret)")] = None
    wml_instance_id: Annotated[str | None, Field(
        description="default WML instance id, for resources that name none")] = None
    wml_credentials_secret: Annotated[str | None, Field(
        pattern=r"^[^/]+/[^/]+$", description="default WML credentials Secret, as namespace/name")] = None
    wml_ca_secret: Annotated[str | None, Field(
        pattern=r"^[^/]+/[^/]+(/[^/]+)?$",
        description="Secret with the PEM CA bundle that verifies the default WML URL's certificate, as "
                    "namespace/name[/key] (key: ca.crt); read like the credentials Secret, so a new CA applies "
                    "as soon as the Secret changes; a resource's own spec.wml.caSecretRef wins for its own URL; "
                    "unset: the system's trust store")] = None
    namespaces: Annotated[tuple[str, ...], NoDecode, Field(
        description="comma-separated namespaces to watch; empty: every namespace")] = ()
    poll_fast_seconds: Annotated[float, Field(
        gt=0, description="poll interval while a resource is changing (not Ready, or a spec not yet observed)")] = 5.0
    poll_slow_seconds: Annotated[float, Field(
        gt=0, description="poll interval of a steady resource (the annotation wmlstream.dev/poll-interval "
                          "overrides it per resource)")] = 30.0
    log_format: Annotated[Literal["text", "json"], Field(description="text or json")] = "text"
    metrics_address: Annotated[str, Field(
        description="host:port of the Prometheus metrics; empty: none")] = "127.0.0.1:9090"
    health_address: Annotated[str, Field(description="host:port of the liveness endpoint /healthz")] = \
        "127.0.0.1:8080"
    wml_timeout_seconds: Annotated[float, Field(gt=0, description="read timeout of a WML request")] = 30.0
    pod_namespace: Annotated[str, Field(
        min_length=1, description="the operator's own namespace: it keeps there the copies of the WML logins "
                                  "that deleting resources needs (Secrets wml-login-<uid>)")] = "wml-stream-operator"
    sweep_seconds: Annotated[float, Field(
        gt=0, description="how often copies of logins whose resource is gone are deleted")] = 600.0

    leader_election: Annotated[bool, Field(
        description="run only while holding the Lease (coordination.k8s.io) leader_election_lease in "
                    "pod_namespace; a replica without it stands by, serving only /healthz; off: run at once "
                    "(one replica only)")] = True
    leader_election_lease: Annotated[str, Field(
        min_length=1, description="name of the Lease the replicas elect their leader with")] = "wml-stream-operator"
    leader_election_lease_seconds: Annotated[float, Field(
        ge=1, description="a standby takes the Lease when its holder has not renewed it for this long "
                          "(client-go's leaseDuration)")] = 15.0
    leader_election_renew_deadline_seconds: Annotated[float, Field(
        gt=0, description="the leader exits when it could not renew the Lease for this long (renewDeadline; "
                          "below the lease's duration)")] = 10.0
    leader_election_retry_period_seconds: Annotated[float, Field(
        gt=0, description="how often the leader renews and a standby tries (retryPeriod)")] = 2.0

    model_max_bytes: Annotated[int, Field(
        gt=0, description="largest model content a PublishedModel may fetch (bytes); larger: Stalled "
                          "ModelTooLarge")] = 512 << 20

    @model_validator(mode="after")
    def _election_order(self) -> OperatorSettings:
        # client-go's rule: the leader must give up (renew deadline) before a standby may take over (duration),
        # and try more than once within its deadline.
        if not (self.leader_election_retry_period_seconds < self.leader_election_renew_deadline_seconds
                < self.leader_election_lease_seconds):
            raise ValueError("leader election needs retry_period < renew_deadline < lease_seconds")
        return self

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(n.strip() for n in value.split(",") if n.strip())
        return value

    @field_validator("wml_url", "wml_instance_id", "wml_credentials_secret", "wml_ca_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def defaults(self) -> Defaults:
        return Defaults(url=self.wml_url, instance_id=self.wml_instance_id,
                        credentials_secret=self.wml_credentials_secret, ca_secret=self.wml_ca_secret)

    @property
    def default_secrets(self) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
        """(namespace, name) of the default credentials' Secret and of the default CA's, each or None."""
        creds_ns, _, creds_name = (self.wml_credentials_secret or "").partition("/")
        ca = self.defaults.ca_key()
        return (creds_ns, creds_name) if creds_name else None, ca[:2] if ca else None


def variables() -> list[str]:
    """The environment variables the operator reads."""
    return [f"{ENV_PREFIX}{name.upper()}" for name in OperatorSettings.model_fields]


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Variables with our prefix that no setting reads: a typo would otherwise be ignored silently."""
    known = set(variables())
    return sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in known)


def usage() -> str:
    """What `--help` prints: every setting, its variable, default and description, from the class above."""
    lines = ["python -m wml_operator: the StreamingDeployment operator. Settings, from the environment:", ""]
    for name, field in OperatorSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = ",".join(default) if isinstance(default, tuple) else default
        lines.append(f"  {ENV_PREFIX}{name.upper()}  (default: {shown if shown not in (None, '') else 'unset'})")
        lines.append(f"      {field.description}")
    return "\n".join(lines)
