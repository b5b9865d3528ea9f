"""Generated bad input for the operator (hypothesis strategies), shared by the unit test of the reconciler and
the fault suite's run of the same cases through the apiserver and a running operator."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st
from pydantic import ValidationError

from tests.support import DictSecrets
from wml_localplatform import process
from wml_operator.reconcile import Reconciler
from wml_operator.resources import Resources
from wml_operator.secrets import Defaults
from wml_operator.spec import parse_spec
from wml_operator.wml import Instances


class Mutation(str):
    """The kind of mutation (what the figures count by), and where it was made."""

    where: tuple[str, ...] = ()

    @classmethod
    def at(cls, kind: str, where: tuple[str, ...]) -> Mutation:
        made = cls(kind)
        made.where = where
        return made


Case = tuple[dict[str, Any], dict[str, dict[str, str]], Mutation]  # spec, Secrets by name, the mutation

SECRET = "S3CRET-never-shown"
REASONS = {"InvalidSpec", "SecretNotFound", "SecretKeyMissing", "InvalidSecret", "MissingWMLEndpoint"}
DEAD = f"http://127.0.0.1:{process.free_port()}"  # any WML call would fail as transient, so it would show
SPEC: dict[str, Any] = {
    "state": "RUNNING", "modelId": "m1", "wml": {"credentialsSecretRef": {"name": "wml"}},
    "sparkCredentialsSecretRef": {"name": "spark", "key": "credentials.json"},
    "input": {"topic": "in", "connectionSecretRef": {"name": "kafka"}},
    "output": {"topic": "out", "connectionSecretRef": {"name": "kafka"}},
}
SECRETS: dict[str, dict[str, str]] = {
    "wml": {"url": DEAD, "instance_id": "iid", "username": "u", "password": SECRET},
    "kafka": {"kafka_brokers_sasl": '["b:9093"]', "user": "k", "password": SECRET},
    "spark": {"credentials.json": json.dumps({"tenant_id": "t", "tenant_id_full": "tf", "cluster_master_url": "u",
                                              "instance_id": "i", "tenant_secret": SECRET, "plan": "p"})},
}

json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | st.just("x" * 5000),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
SPEC_PATHS = [("state",), ("modelId",), ("modelRef",), ("modelRef", "name"), ("wml",), ("wml", "url"),
              ("wml", "credentialsSecretRef"),
              ("wml", "credentialsSecretRef", "name"), ("sparkCredentialsSecretRef", "key"),
              ("sparkCredentialsSecretRef", "name"), ("input",), ("input", "topic"),
              ("input", "connectionSecretRef", "name"), ("input", "connectionSecretRef", "key"),
              ("output", "topic"), ("deletionPolicy",), ("restartPolicy",), ("unknownField",), ("description",)]
SECRET_KEYS = [("wml", "url"), ("wml", "username"), ("wml", "password"), ("wml", "instance_id"),
               ("kafka", "kafka_brokers_sasl"), ("kafka", "user"), ("kafka", "password"),
               ("kafka", "security_protocol"), ("spark", "credentials.json")]


@st.composite
def mutated(draw: st.DrawFn) -> Case:
    spec, secrets = copy.deepcopy(SPEC), copy.deepcopy(SECRETS)
    kind = draw(st.sampled_from(["spec-set", "spec-delete", "secret-missing", "secret-key-missing",
                                 "secret-value"]))
    where: tuple[str, ...]
    if kind.startswith("spec"):
        where = draw(st.sampled_from(SPEC_PATHS))
        node: Any = spec
        for part in where[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else node
        if isinstance(node, dict):
            if kind == "spec-set":
                node[where[-1]] = draw(json_value)
            else:
                node.pop(where[-1], None)
    elif kind == "secret-missing":
        where = (draw(st.sampled_from(sorted(secrets))),)
        secrets.pop(where[0])
    else:
        name, key = where = draw(st.sampled_from(SECRET_KEYS))
        if kind == "secret-key-missing":
            secrets[name].pop(key, None)
        else:
            secrets[name][key] = draw(st.text(max_size=40) | st.just("{not json") | st.just("[1, 2") |
                                      st.just('{"tenant_id": 1}') | st.just(""))
    return spec, secrets, Mutation.at(kind, where)


def reconciled_reason(spec: dict[str, Any], secrets: dict[str, dict[str, str]]) -> tuple[str | None, list[str]]:
    """What the reconciler makes of a case with WML unreachable: the Stalled reason, or None when the input is
    acceptable (it then tried WML); and the WML paths it called. The fault suite holds a running operator to it."""
    calls: list[str] = []
    wml = Instances(timeout=0.5, on_response=lambda method, path, status, seconds: calls.append(path))
    reconciler = Reconciler(DictSecrets(secrets), wml, Resources(5.0, 30.0), Defaults())
    body = {"metadata": {"uid": "u1", "namespace": "ns", "name": "n", "generation": 1}, "spec": spec,
            "status": {}}
    try:
        outcome = reconciler.run(body)
    finally:
        wml.close()
    if outcome.retry_after is not None:
        return None, calls
    stalled = [c for c in outcome.status["conditions"] if c["type"] == "Stalled"]
    assert stalled, outcome.status
    assert SECRET not in json.dumps(outcome.status)
    assert all(SECRET not in message for _, _, message in outcome.events)
    return str(stalled[0]["reason"]), calls


# What a missing key leads to: the WML endpoint falls back to the operator's defaults (none here), the
# security protocol has a default of its own.
_KEY_MISSING: dict[tuple[str, ...], str | None] = {
    ("wml", "url"): "MissingWMLEndpoint", ("wml", "instance_id"): "MissingWMLEndpoint",
    ("wml", "username"): "SecretKeyMissing", ("wml", "password"): "SecretKeyMissing",
    ("kafka", "kafka_brokers_sasl"): "SecretKeyMissing", ("kafka", "user"): "SecretKeyMissing",
    ("kafka", "password"): "SecretKeyMissing", ("kafka", "security_protocol"): None,
    ("spark", "credentials.json"): "SecretKeyMissing"}
_SECRET_OF = {("sparkCredentialsSecretRef",): "spark", ("input", "connectionSecretRef"): "kafka",
              ("output", "connectionSecretRef"): "kafka"}


def expected_reasons(spec: dict[str, Any], secrets: dict[str, dict[str, str]], mutation: Mutation) -> set[str | None]:
    """The outcomes the documented rules allow for a case, worked out from the mutation itself (not by running
    the reconciler): a Stalled reason, or None for input the operator must accept (and then call WML with)."""
    try:
        parsed = parse_spec(spec)  # the declared schema, which the CRD is generated from
    except ValidationError:
        return {"InvalidSpec"}
    where = mutation.where
    if mutation == "secret-missing":
        return {"SecretNotFound"}
    if mutation == "secret-key-missing" or (mutation == "secret-value" and secrets[where[0]][where[1]] == ""):
        return {_KEY_MISSING[where]}
    if mutation == "secret-value":
        return _value_rule(where, secrets[where[0]][where[1]])
    if where[:1] == ("wml",) and (parsed.wml is None or parsed.wml.credentials_secret_ref is None):
        return {"MissingWMLEndpoint"}
    if where == ("wml", "url"):
        return {None, "InvalidSpec"} if mutation == "spec-set" else {None}  # a URL the schema lets through
    if where[-1] == "name" and where[:-1] in _SECRET_OF:
        name = str(spec[where[0]][where[1]]["name"]) if len(where) == 3 else str(spec[where[0]]["name"])
        if name not in secrets:
            return {"SecretNotFound"}
        return {None} if name == _SECRET_OF[where[:-1]] else {"SecretKeyMissing"}
    if where == ("wml", "credentialsSecretRef", "name"):
        name = str(spec["wml"]["credentialsSecretRef"]["name"])
        return {"SecretNotFound"} if name not in secrets else {None} if name == "wml" else {"SecretKeyMissing"}
    if where == ("sparkCredentialsSecretRef", "key"):
        return {None} if parsed.spark_credentials_secret_ref.key == "credentials.json" else {"SecretKeyMissing"}
    if where[-1] == "key" and where[:-1] in _SECRET_OF:  # the connection as one JSON key of the Secret
        key = (spec[where[0]].get(where[1]) or {}).get("key")
        if key is None:
            return {None}
        return {"InvalidSecret"} if key in secrets["kafka"] else {"SecretKeyMissing"}
    return {None}  # state, modelId, topics, description, policies: any value the schema accepts is usable


def _value_rule(where: tuple[str, ...], value: str) -> set[str | None]:
    name, key = where
    if (name, key) == ("wml", "username"):
        return {"InvalidSecret"} if ":" in value else {None}
    if (name, key) == ("wml", "url"):
        return {None, "InvalidSecret"} if value.startswith(("http://", "https://")) else {"InvalidSecret"}
    if (name, key) == ("kafka", "security_protocol"):
        return {None} if value in ("SASL_SSL", "SASL_PLAINTEXT") else {"InvalidSecret"}
    if (name, key) == ("kafka", "kafka_brokers_sasl"):
        listed = value.strip().startswith("[")
        return {None, "InvalidSecret"} if listed or not value.replace(",", "").strip() else {None}
    if name == "spark":
        return {"InvalidSecret"}  # no generated text is the six-field JSON object
    return {None}  # instance id, passwords, Kafka user: any non-empty text is usable
