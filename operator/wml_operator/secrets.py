"""From Secret references to what a deployment is built from, with errors that name the exact Secret and key.

Secret values never appear in any message raised here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from wml_api.credentials import WMLCredentials
from wml_api.models import KafkaConnection, SparkServiceInstance, describe_validation_error
from wml_api.transport import normalize_base_url
from wml_operator.spec import KafkaSide, StreamingDeploymentSpec, WMLEndpoint

CONNECTION_KEYS = ("kafka_brokers_sasl", "user", "password", "api_key", "kafka_admin_url", "kafka_rest_url",
                   "mqlight_lookup_url", "security_protocol")


class SpecProblem(Exception):
    """Needs a user fix: `reason` is a condition reason, the message names the field, Secret and key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SecretReader(Protocol):
    def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The Secret's decoded data, or None when it does not exist."""


@dataclass(frozen=True)
class Defaults:
    """The operator's default WML endpoint, used where a resource does not name one."""

    url: str | None = None
    instance_id: str | None = None
    credentials_secret: str | None = None  # "namespace/name"
    # The CA bundle that verifies the default URL's certificate: "namespace/name[/key]", key ca.crt by default
    # (where cert-manager and deploy/bootstrap-tls.sh put it in a kubernetes.io/tls Secret).
    ca_secret: str | None = None

    def ca_key(self) -> tuple[str, str, str] | None:
        """(namespace, name, key) of the default CA's Secret, when one is set."""
        if not self.ca_secret:
            return None
        namespace, name, key = ([*self.ca_secret.split("/", 2), DEFAULT_CA_KEY])[:3]
        return namespace, name, key


DEFAULT_CA_KEY = "ca.crt"
DEFAULT_CA_SETTING = "the operator's default WML CA (WML_OPERATOR_WML_CA_SECRET)"


@dataclass(frozen=True)
class Endpoint:
    url: str
    instance_id: str
    credentials: WMLCredentials
    ca_pem: str | None = field(default=None, repr=False)
    # Where the login and CA came from, by name ("namespace/name", "name/key"): recorded in the status, so a
    # later pass can reach this endpoint again after the spec moved to another one.
    credentials_secret: str | None = field(default=None, compare=False)
    ca_secret: str | None = field(default=None, compare=False)

    def recorded(self) -> dict[str, str]:
        """status.endpoint: names only, never a credential."""
        out = {"url": self.url, "instanceId": self.instance_id}
        if self.credentials_secret:
            out["credentialsSecret"] = self.credentials_secret
        if self.ca_secret:
            out["caSecret"] = self.ca_secret
        return out

    def same_place(self, recorded: Mapping[str, Any]) -> bool:
        return (recorded.get("url"), recorded.get("instanceId")) == (self.url, self.instance_id)


@dataclass(frozen=True)
class Resolved:
    endpoint: Endpoint
    input: KafkaConnection
    output: KafkaConnection
    spark: SparkServiceInstance
    spec_hash: str
    secret_names: frozenset[str]  # the Secrets of the resource's namespace that this resource reads
    model_id: str = ""  # the model deployed: spec.modelId, or what spec.modelRef's PublishedModel offers
    model_version: str | None = None  # a modelRef's version: part of the hash, so a new one re-creates


def _secret(reader: SecretReader, namespace: str, name: str, field_path: str) -> Mapping[str, str]:
    data = reader.read(namespace, name)
    if data is None:
        raise SpecProblem("SecretNotFound", f"{field_path}: Secret {namespace}/{name} does not exist")
    return data


def _key(data: Mapping[str, str], namespace: str, name: str, key: str, field_path: str) -> str:
    value = data.get(key)
    if value is None or value == "":
        raise SpecProblem("SecretKeyMissing", f"{field_path}: Secret {namespace}/{name} has no key {key!r}")
    return value


def _json(text: str, namespace: str, name: str, key: str, field_path: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise SpecProblem("InvalidSecret",
                          f"{field_path}: Secret {namespace}/{name} key {key!r} is not a JSON object")
    return value


def connection(reader: SecretReader, namespace: str, side: KafkaSide, field_path: str) -> KafkaConnection:
    ref = side.connection_secret_ref
    data = _secret(reader, namespace, ref.name, field_path)
    if ref.key:
        raw: dict[str, Any] = _json(_key(data, namespace, ref.name, ref.key, field_path), namespace, ref.name,
                                    ref.key, field_path)
        where = f"Secret {namespace}/{ref.name} key {ref.key!r}"
    else:
        _key(data, namespace, ref.name, "kafka_brokers_sasl", field_path)
        raw = {k: data[k] for k in CONNECTION_KEYS if data.get(k)}
        brokers = raw["kafka_brokers_sasl"].strip()
        if brokers.startswith("["):
            raw["kafka_brokers_sasl"] = _json(f'{{"b": {brokers}}}', namespace, ref.name, "kafka_brokers_sasl",
                                              field_path)["b"]
        where = f"Secret {namespace}/{ref.name}"
    try:
        conn = KafkaConnection.model_validate(raw)
    except ValidationError as exc:
        raise SpecProblem("InvalidSecret", f"{field_path}: {where}: {describe_validation_error(exc)}") from None
    if not ((conn.user and conn.password) or conn.api_key):
        raise SpecProblem("SecretKeyMissing", f"{field_path}: {where} needs `user` and `password`, or `api_key`")
    return conn


def spark(reader: SecretReader, namespace: str, spec: StreamingDeploymentSpec) -> SparkServiceInstance:
    ref, path = spec.spark_credentials_secret_ref, "spec.sparkCredentialsSecretRef"
    data = _secret(reader, namespace, ref.name, path)
    raw = _json(_key(data, namespace, ref.name, ref.key, path), namespace, ref.name, ref.key, path)
    # The platform's service credentials, or the header's own {"credentials": ..., "version": ...} form.
    body = raw if "credentials" in raw else {"credentials": raw, "version": "2.0"}
    try:
        return SparkServiceInstance.model_validate(body)
    except ValidationError as exc:
        raise SpecProblem("InvalidSecret", f"{path}: Secret {namespace}/{ref.name} key {ref.key!r}: "
                                           f"{describe_validation_error(exc)}") from None


def _pem(value: str, where: str) -> str:
    if "-----BEGIN CERTIFICATE-----" not in value:
        raise SpecProblem("InvalidSecret", f"{where} is not a PEM certificate")
    return value


def default_ca(reader: SecretReader, defaults: Defaults, url: str) -> str | None:
    """The default CA bundle when `url` is the operator's default endpoint and a default CA is set; else None.
    The CA belongs to the default endpoint, not to every resource that leaves caSecretRef out: a resource that
    names another URL keeps the system's trust store. A missing or invalid Secret is a SpecProblem (Stalled,
    named), never a fall-back to another trust store."""
    key = defaults.ca_key()
    if key is None or not defaults.url or url != _normalized(defaults.url):
        return None
    ca_ns, ca_name, ca_key = key
    data = _secret(reader, ca_ns, ca_name, DEFAULT_CA_SETTING)
    return _pem(_key(data, ca_ns, ca_name, ca_key, DEFAULT_CA_SETTING),
                f"{DEFAULT_CA_SETTING}: Secret {ca_ns}/{ca_name} key {ca_key!r}")


def _normalized(url: str) -> str:
    try:
        return normalize_base_url(url)
    except ValueError:
        return url


def endpoint(reader: SecretReader, namespace: str, wml: WMLEndpoint | None, defaults: Defaults) -> Endpoint:
    """The `spec.wml` block of any of the operator's resources, resolved with its Secrets and the defaults."""
    if wml and wml.credentials_secret_ref:
        creds_ns, creds_name, path = namespace, wml.credentials_secret_ref.name, "spec.wml.credentialsSecretRef"
    elif defaults.credentials_secret:
        creds_ns, _, creds_name = defaults.credentials_secret.partition("/")
        path = "the operator's default WML credentials (WML_OPERATOR_WML_CREDENTIALS_SECRET)"
    else:
        raise SpecProblem("MissingWMLEndpoint", "spec.wml.credentialsSecretRef is required: the operator has no "
                                                "default WML credentials")
    data = _secret(reader, creds_ns, creds_name, path)
    username = _key(data, creds_ns, creds_name, "username", path)
    password = _key(data, creds_ns, creds_name, "password", path)
    url = (wml.url if wml else None) or data.get("url") or defaults.url
    instance = (wml.instance_id if wml else None) or data.get("instance_id") or defaults.instance_id
    if not url:
        raise SpecProblem("MissingWMLEndpoint", "spec.wml.url is required: neither the credentials Secret nor "
                                                "the operator gives a WML URL")
    if not instance:
        raise SpecProblem("MissingWMLEndpoint", "spec.wml.instanceId is required: neither the credentials Secret "
                                                "nor the operator gives an instance id")
    ca_pem = None
    if wml and wml.ca_secret_ref:
        ref = wml.ca_secret_ref
        ca_data = _secret(reader, namespace, ref.name, "spec.wml.caSecretRef")
        ca_pem = _pem(_key(ca_data, namespace, ref.name, ref.key, "spec.wml.caSecretRef"),
                      f"spec.wml.caSecretRef: Secret {namespace}/{ref.name} key {ref.key!r}")
    try:
        credentials = WMLCredentials(username, password)
    except ValueError as exc:
        raise SpecProblem("InvalidSecret", f"{path}: Secret {creds_ns}/{creds_name}: {exc}") from None
    try:
        url = normalize_base_url(url)
    except ValueError as exc:
        where = "spec.wml.url" if wml and wml.url else f"{path}: Secret {creds_ns}/{creds_name} key 'url'"
        raise SpecProblem("InvalidSecret" if "Secret" in where else "InvalidSpec", f"{where}: {exc}") from None
    if ca_pem is None:  # the resource's own caSecretRef wins; else the default endpoint's CA, if this is it
        ca_pem = default_ca(reader, defaults, url)
    return Endpoint(url, instance, credentials, ca_pem, credentials_secret=f"{creds_ns}/{creds_name}",
                    ca_secret=f"{wml.ca_secret_ref.name}/{wml.ca_secret_ref.key}" if wml and wml.ca_secret_ref
                    else None)


def recorded_endpoint(reader: SecretReader, namespace: str, recorded: Mapping[str, Any], now: Endpoint,
                      kept: Sequence[Endpoint] = (), defaults: Defaults | None = None) -> Endpoint:
    """The endpoint a status recorded (where the deployment lives), opened with the Secrets it names while they
    still hold a login, else with the login kept for it (wml_operator.login_copies), else with the spec's own (a
    migration keeps one user on both endpoints). Its CA: the Secret the status names, else the default CA when
    it is the default endpoint, else the kept copy's, else the spec's."""
    copy = next((ep for ep in kept if ep.same_place(recorded)), None)
    credentials, creds_name = (copy.credentials, copy.credentials_secret) if copy else \
        (now.credentials, now.credentials_secret)
    creds_ns, _, name = str(recorded.get("credentialsSecret") or "").partition("/")
    data = reader.read(creds_ns, name) if creds_ns and name else None
    if data and data.get("username") and data.get("password"):
        with contextlib.suppress(ValueError):
            credentials, creds_name = WMLCredentials(data["username"], data["password"]), f"{creds_ns}/{name}"
    ca_pem, ca_name = (copy.ca_pem, copy.ca_secret) if copy else (now.ca_pem, now.ca_secret)
    if defaults is not None and not recorded.get("caSecret"):
        # The live default CA before the copy's, as for the login: a copy may predate a CA rotation.
        with contextlib.suppress(SpecProblem):  # best effort: the call there says what is wrong
            ca_pem = default_ca(reader, defaults, str(recorded.get("url"))) or ca_pem
    ca_ref, _, ca_key = str(recorded.get("caSecret") or "").partition("/")
    ca_data = reader.read(namespace, ca_ref) if ca_ref and ca_key else None
    if ca_data and "-----BEGIN CERTIFICATE-----" in (ca_data.get(ca_key) or ""):
        ca_pem, ca_name = ca_data[ca_key], f"{ca_ref}/{ca_key}"
    return Endpoint(str(recorded.get("url")), str(recorded.get("instanceId")), credentials, ca_pem,
                    credentials_secret=creds_name, ca_secret=ca_name)


def build_hash(spec: StreamingDeploymentSpec, ep: Endpoint, inp: KafkaConnection, out: KafkaConnection,
               spark_instance: SparkServiceInstance, model_id: str | None = None,
               model_version: str | None = None) -> str:
    """What the deployment is built from; WML login credentials are not part of it (a rotation of those
    must not re-create running streams)."""
    output: dict[str, Any] = {"topic": spec.output.topic, "connection": out.model_dump(mode="json")}
    if spec.output.dead_letter_topic:  # only when set: a resource without one keeps the hash it had
        output["dead_letter_topic"] = spec.output.dead_letter_topic
    material = {
        "url": ep.url, "instance": ep.instance_id, "model": model_id or spec.model_id,
        "input": {"topic": spec.input.topic, "connection": inp.model_dump(mode="json")},
        "output": output,
        "spark": spark_instance.model_dump(mode="json"),
    }
    if model_version:  # a modelRef's only: a resource with a modelId keeps the hash it had
        material["model_version"] = model_version
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def referenced_secrets(spec: StreamingDeploymentSpec) -> frozenset[str]:
    names = {spec.spark_credentials_secret_ref.name, spec.input.connection_secret_ref.name,
             spec.output.connection_secret_ref.name}
    if spec.wml and spec.wml.credentials_secret_ref:
        names.add(spec.wml.credentials_secret_ref.name)
    if spec.wml and spec.wml.ca_secret_ref:
        names.add(spec.wml.ca_secret_ref.name)
    return frozenset(names)


def resolve(reader: SecretReader, namespace: str, spec: StreamingDeploymentSpec, defaults: Defaults,
            model_id: str | None = None, model_version: str | None = None) -> Resolved:
    """`model_id`, `model_version`: what spec.modelRef resolved to (wml_operator.model_refs); else spec.modelId."""
    ep = endpoint(reader, namespace, spec.wml, defaults)
    inp = connection(reader, namespace, spec.input, "spec.input.connectionSecretRef")
    out = connection(reader, namespace, spec.output, "spec.output.connectionSecretRef")
    spark_instance = spark(reader, namespace, spec)
    model = model_id or spec.model_id or ""
    return Resolved(ep, inp, out, spark_instance,
                    build_hash(spec, ep, inp, out, spark_instance, model, model_version),
                    referenced_secrets(spec), model, model_version)
