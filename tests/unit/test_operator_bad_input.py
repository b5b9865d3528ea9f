"""Generated bad input (hypothesis): every spec or Secret mistake ends Stalled with a specific reason, makes
0 WML calls, never crashes the reconciler and never echoes a secret."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localplatform import process
from tests.support import DictSecrets
from wml_operator.reconcile import Deps, Reconciler, Transient
from wml_operator.secrets import Defaults
from wml_operator.settings import OperatorSettings
from wml_operator.wml import ClientPool, InstanceCache

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
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.just("x" * 5000),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
SPEC_PATHS = [("state",), ("modelId",), ("wml",), ("wml", "url"), ("wml", "credentialsSecretRef"),
              ("wml", "credentialsSecretRef", "name"), ("sparkCredentialsSecretRef", "key"),
              ("sparkCredentialsSecretRef", "name"), ("input",), ("input", "topic"),
              ("input", "connectionSecretRef", "name"), ("input", "connectionSecretRef", "key"),
              ("output", "topic"), ("deletionPolicy",), ("restartPolicy",), ("unknownField",), ("description",)]
SECRET_KEYS = [("wml", "url"), ("wml", "username"), ("wml", "password"), ("wml", "instance_id"),
               ("kafka", "kafka_brokers_sasl"), ("kafka", "user"), ("kafka", "password"),
               ("kafka", "security_protocol"), ("spark", "credentials.json")]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, dict[str, str]], str]:
    spec, secrets = copy.deepcopy(SPEC), copy.deepcopy(SECRETS)
    kind = draw(st.sampled_from(["spec-set", "spec-delete", "secret-missing", "secret-key-missing",
                                 "secret-value"]))
    if kind.startswith("spec"):
        path = draw(st.sampled_from(SPEC_PATHS))
        node: Any = spec
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else node
        if isinstance(node, dict):
            if kind == "spec-set":
                node[path[-1]] = draw(json_value)
            else:
                node.pop(path[-1], None)
    elif kind == "secret-missing":
        secrets.pop(draw(st.sampled_from(sorted(secrets))))
    else:
        name, key = draw(st.sampled_from(SECRET_KEYS))
        if kind == "secret-key-missing":
            secrets[name].pop(key, None)
        else:
            secrets[name][key] = draw(st.text(max_size=40) | st.just("{not json") | st.just("[1, 2") |
                                      st.just('{"tenant_id": 1}') | st.just(""))
    return spec, secrets, kind


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_bad_input_stalls_without_calling_wml(case: tuple[dict[str, Any], dict[str, dict[str, str]], str]) -> None:
    spec, secrets, _ = case
    calls: list[str] = []
    pool = ClientPool(timeout=0.5, on_response=lambda method, path, status, seconds: calls.append(path))
    reconciler = Reconciler(Deps(OperatorSettings(defaults=Defaults()), DictSecrets(secrets), pool,
                                 InstanceCache()))
    body = {"metadata": {"uid": "u1", "namespace": "ns", "name": "n", "generation": 1}, "spec": spec,
            "status": {}}
    try:
        outcome = reconciler.run(body)
    except Transient:
        # Only input the operator accepted may reach WML (here: a dead port, so a transient error).
        assert calls, "a transient error without any WML call"
        return
    stalled = [c for c in outcome.status["conditions"] if c["type"] == "Stalled"]
    assert stalled, outcome.status
    assert stalled[0]["reason"] in REASONS
    assert calls == []
    assert SECRET not in json.dumps(outcome.status)
    assert all(SECRET not in message for _, _, message in outcome.events)
