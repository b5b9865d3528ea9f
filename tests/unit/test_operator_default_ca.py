"""The operator's default CA (WML_OPERATOR_WML_CA_SECRET): it verifies the default endpoint only, a resource's
own caSecretRef wins, a missing or wrong Secret is a named SpecProblem (never a fall-back to another trust
store), and a rotation of it wakes the resources that may use it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from wml_operator.resources import Resources
from wml_operator.secrets import Defaults, SpecProblem, endpoint, recorded_endpoint
from wml_operator.settings import OperatorSettings
from wml_operator.spec import WMLEndpoint
from wml_operator.wml import ClientPool

pytestmark = pytest.mark.unit

OPS, TEAM = "wml-stream-operator", "team"
DEFAULT_URL = "https://wml-server.wml-stream-operator.svc:9443"
DEFAULT_CA = "-----BEGIN CERTIFICATE-----\ndefault\n-----END CERTIFICATE-----\n"
OWN_CA = "-----BEGIN CERTIFICATE-----\nown\n-----END CERTIFICATE-----\n"
DEFAULTS = Defaults(url=DEFAULT_URL, instance_id="iid", credentials_secret=f"{OPS}/wml-credentials",
                    ca_secret=f"{OPS}/wml-server-tls")


class Secrets:
    """A SecretReader over (namespace, name) -> data."""

    def __init__(self, data: dict[tuple[str, str], dict[str, str]]) -> None:
        self.data = data

    def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.data.get((namespace, name))


def secrets(**over: dict[str, str] | None) -> Secrets:
    data: dict[tuple[str, str], dict[str, str]] = {
        (OPS, "wml-credentials"): {"username": "u", "password": "p" * 12},
        (OPS, "wml-server-tls"): {"tls.crt": "...", "tls.key": "...", "ca.crt": DEFAULT_CA},
        (TEAM, "own-ca"): {"ca.crt": OWN_CA},
        (TEAM, "wml"): {"username": "u2", "password": "q" * 12},
    }
    for name, value in over.items():
        if value is None:
            data.pop((OPS, name.replace("_", "-")))
        else:
            data[(OPS, name.replace("_", "-"))] = value
    return Secrets(data)


def wml(**raw: Any) -> WMLEndpoint:
    return WMLEndpoint.model_validate(raw)


def test_the_default_ca_verifies_the_default_endpoint() -> None:
    ep = endpoint(secrets(), TEAM, None, DEFAULTS)
    assert (ep.url, ep.ca_pem) == (DEFAULT_URL, DEFAULT_CA)
    assert ep.ca_secret is None  # status.endpoint.caSecret names the resource's own Secrets only
    # The same endpoint spelled with its own credentials (the default URL): still the default CA.
    mine = endpoint(secrets(), TEAM, wml(credentialsSecretRef={"name": "wml"}), DEFAULTS)
    assert mine.ca_pem == DEFAULT_CA


def test_a_resources_own_ca_wins_and_other_urls_keep_the_system_trust() -> None:
    own = endpoint(secrets(), TEAM, wml(caSecretRef={"name": "own-ca", "key": "ca.crt"}), DEFAULTS)
    assert (own.url, own.ca_pem, own.ca_secret) == (DEFAULT_URL, OWN_CA, "own-ca/ca.crt")
    other = endpoint(secrets(), TEAM, wml(url="https://wml.example", credentialsSecretRef={"name": "wml"}),
                     DEFAULTS)
    assert other.ca_pem is None  # the default CA is the default endpoint's, not every resource's


@pytest.mark.parametrize(("over", "ca_secret", "reason", "words"), [
    ({"wml_server_tls": None}, f"{OPS}/wml-server-tls", "SecretNotFound",
     ["WML_OPERATOR_WML_CA_SECRET", f"Secret {OPS}/wml-server-tls does not exist"]),
    ({"wml_server_tls": {"tls.crt": "x"}}, f"{OPS}/wml-server-tls", "SecretKeyMissing", ["has no key 'ca.crt'"]),
    ({"wml_server_tls": {"ca.crt": "not a pem"}}, f"{OPS}/wml-server-tls", "InvalidSecret",
     ["key 'ca.crt' is not a PEM certificate"]),
    ({}, f"{OPS}/wml-server-tls/bundle.pem", "SecretKeyMissing", ["has no key 'bundle.pem'"]),
])
def test_a_missing_or_wrong_default_ca_is_a_named_problem(over: dict[str, Any], ca_secret: str, reason: str,
                                                         words: list[str]) -> None:
    with pytest.raises(SpecProblem) as problem:
        endpoint(secrets(**over), TEAM, None, Defaults(url=DEFAULT_URL, instance_id="iid",
                                                       credentials_secret=f"{OPS}/wml-credentials",
                                                       ca_secret=ca_secret))
    assert problem.value.reason == reason
    for word in words:
        assert word in problem.value.message
    assert "tls.key" not in problem.value.message


def test_a_key_named_in_the_setting_is_read() -> None:
    defaults = Defaults(url=DEFAULT_URL, instance_id="iid", credentials_secret=f"{OPS}/wml-credentials",
                        ca_secret=f"{OPS}/bundle/trust.pem")
    assert defaults.ca_key() == (OPS, "bundle", "trust.pem")
    ep = endpoint(secrets(bundle={"trust.pem": OWN_CA}), TEAM, None, defaults)
    assert ep.ca_pem == OWN_CA


def test_a_recorded_default_endpoint_is_opened_with_the_default_ca() -> None:
    """A resource moved off the default endpoint: its old deployment there is reached with the default CA."""
    now = endpoint(secrets(), TEAM, wml(url="https://wml.example", credentialsSecretRef={"name": "wml"}), DEFAULTS)
    recorded = {"url": DEFAULT_URL, "instanceId": "iid", "credentialsSecret": f"{OPS}/wml-credentials"}
    old = recorded_endpoint(secrets(), TEAM, recorded, now, (), DEFAULTS)
    assert (old.url, old.ca_pem) == (DEFAULT_URL, DEFAULT_CA)
    # A login kept before the CA was rotated: the live default CA wins over the copy's, as the live login does.
    kept = replace(endpoint(secrets(), TEAM, None, DEFAULTS), ca_pem=OWN_CA)
    assert recorded_endpoint(secrets(), TEAM, recorded, now, (kept,), DEFAULTS).ca_pem == DEFAULT_CA
    # The Secret gone (a namespace being deleted): the copy's CA, never none.
    gone = recorded_endpoint(secrets(wml_server_tls=None), TEAM, recorded, now, (kept,), DEFAULTS)
    assert gone.ca_pem == OWN_CA


@pytest.mark.parametrize(("value", "ok"), [("ns/name", True), ("ns/name/key.pem", True), ("name", False),
                                          ("ns/name/key/more", False), ("", True)])
def test_the_setting_is_namespace_name_and_an_optional_key(monkeypatch: pytest.MonkeyPatch, value: str,
                                                           ok: bool) -> None:
    monkeypatch.setenv("WML_OPERATOR_WML_CA_SECRET", value)
    if not ok:
        with pytest.raises(ValueError, match="wml_ca_secret"):
            OperatorSettings()
        return
    settings = OperatorSettings()
    assert settings.defaults.ca_secret == (value or None)


def test_a_rotated_default_ca_wakes_the_resources_without_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WML_OPERATOR_WML_CREDENTIALS_SECRET", f"{OPS}/wml-credentials")
    monkeypatch.setenv("WML_OPERATOR_WML_CA_SECRET", f"{OPS}/wml-server-tls")
    creds, ca = OperatorSettings().default_secrets
    assert (creds, ca) == ((OPS, "wml-credentials"), (OPS, "wml-server-tls"))
    resources = Resources(5.0, 30.0, default_secret=creds, default_ca=ca)
    spec: dict[str, Any] = {"modelId": "m", "sparkCredentialsSecretRef": {"name": "spark", "key": "c"},
                            "input": {"topic": "i", "connectionSecretRef": {"name": "kafka"}},
                            "output": {"topic": "o", "connectionSecretRef": {"name": "kafka"}}}
    resources.track("ADDED", {"metadata": {"uid": "u1", "namespace": TEAM, "generation": 1}, "spec": spec})
    own = {**spec, "wml": {"caSecretRef": {"name": "own-ca", "key": "ca.crt"}}}
    resources.track("ADDED", {"metadata": {"uid": "u2", "namespace": TEAM, "generation": 1}, "spec": own})
    assert resources.users_of(OPS, "wml-server-tls") == ["u1"]
    assert resources.users_of(TEAM, "own-ca") == ["u2"]


def test_a_new_ca_makes_a_new_client() -> None:
    """The pool keys clients by the CA's hash: a rotated CA is used by the next pass, with no restart."""
    pool = ClientPool()
    try:
        first = pool.client(endpoint(secrets(), TEAM, None, DEFAULTS))
        again = pool.client(endpoint(secrets(), TEAM, None, DEFAULTS))
        rotated = pool.client(endpoint(secrets(wml_server_tls={"ca.crt": OWN_CA}), TEAM, None, DEFAULTS))
        assert first is again
        assert rotated is not first
    finally:
        pool.close()


@pytest.mark.parametrize(("url", "warned"), [("http://wml.example:9443", True), ("http://127.0.0.1:9443", False),
                                             ("http://localhost:9443", False), ("https://wml.example", False)])
def test_plain_http_off_loopback_is_logged(caplog: pytest.LogCaptureFixture, url: str, warned: bool) -> None:
    pool = ClientPool()
    try:
        with caplog.at_level(logging.WARNING, logger="wml_operator.wml"):
            pool.client(endpoint(secrets(), TEAM, None, Defaults(url=url, instance_id="iid",
                                                                 credentials_secret=f"{OPS}/wml-credentials")))
    finally:
        pool.close()
    assert ("plain HTTP" in caplog.text) is warned
    assert "p" * 12 not in caplog.text
