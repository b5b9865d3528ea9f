"""Generated bad input for the operator (hypothesis strategies), shared by the unit test of the reconciler and
the fault suite's run of the same cases through the apiserver and a running operator."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

from tests.support import DictSecrets
from wml_localplatform import process
from wml_operator.reconcile import Deps, Reconciler, Transient
from wml_operator.secrets import Defaults
from wml_operator.settings import OperatorSettings
from wml_operator.wml import ClientPool, InstanceCache

Case = tuple[dict[str, Any], dict[str, dict[str, str]], str]  # spec, Secrets by name, kind of mutation

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


def expected_reason(spec: dict[str, Any], secrets: dict[str, dict[str, str]]) -> tuple[str | None, list[str]]:
    """What the reconciler makes of a case with WML unreachable: the Stalled reason, or None when the input is
    acceptable (it then tried WML); and the WML paths it called."""
    calls: list[str] = []
    pool = ClientPool(timeout=0.5, on_response=lambda method, path, status, seconds: calls.append(path))
    reconciler = Reconciler(Deps(OperatorSettings(defaults=Defaults()), DictSecrets(secrets), pool,
                                 InstanceCache()))
    body = {"metadata": {"uid": "u1", "namespace": "ns", "name": "n", "generation": 1}, "spec": spec,
            "status": {}}
    try:
        outcome = reconciler.run(body)
    except Transient:
        return None, calls
    stalled = [c for c in outcome.status["conditions"] if c["type"] == "Stalled"]
    assert stalled, outcome.status
    assert SECRET not in json.dumps(outcome.status)
    assert all(SECRET not in message for _, _, message in outcome.events)
    return str(stalled[0]["reason"]), calls
