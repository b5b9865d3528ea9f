"""Secret references -> connections, Spark credentials and the endpoint; errors name the Secret and key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import DictSecrets
from wml_operator.secrets import Defaults, SpecProblem, resolve
from wml_operator.spec import parse_spec

NS = "team"
SPARK = {"tenant_id": "t", "tenant_id_full": "tf", "cluster_master_url": "https://s", "instance_id": "i",
         "tenant_secret": "spark-secret-value", "plan": "p"}


def base_secrets() -> dict[str, dict[str, str]]:
    return {
        "wml": {"username": "u", "password": "wml-password-value", "url": "https://wml.local", "instance_id": "iid"},
        "kafka": {"kafka_brokers_sasl": '["b1:9093", "b2:9093"]', "user": "ku", "password": "kafka-password"},
        "spark": {"credentials.json": json.dumps(SPARK)},
    }


def spec(**over: Any) -> Any:
    raw: dict[str, Any] = {"modelId": "m1", "wml": {"credentialsSecretRef": {"name": "wml"}},
                           "sparkCredentialsSecretRef": {"name": "spark", "key": "credentials.json"},
                           "input": {"topic": "in", "connectionSecretRef": {"name": "kafka"}},
                           "output": {"topic": "out", "connectionSecretRef": {"name": "kafka"}}}
    raw.update(over)
    return parse_spec(raw)


def test_resolves_everything() -> None:
    r = resolve(DictSecrets(base_secrets(), NS), NS, spec(), Defaults())
    assert (r.endpoint.url, r.endpoint.instance_id, r.endpoint.credentials.username) == ("https://wml.local", "iid",
                                                                                         "u")
    assert r.input.kafka_brokers_sasl == ["b1:9093", "b2:9093"]
    assert r.spark.credentials.tenant_secret == "spark-secret-value"
    assert r.secret_names == {"wml", "kafka", "spark"}
    assert "kafka-password" not in repr(r)
    assert "wml-password-value" not in repr(r)


def test_comma_list_and_whole_json_key() -> None:
    secrets = base_secrets()
    secrets["kafka"]["kafka_brokers_sasl"] = "b1:9093, b2:9093"
    secrets["hub"] = {"creds.json": json.dumps({"kafka_brokers_sasl": ["h:9093"], "api_key": "k" * 48,
                                                "kafka_admin_url": "https://admin"})}
    s = spec(output={"topic": "out", "connectionSecretRef": {"name": "hub", "key": "creds.json"}})
    r = resolve(DictSecrets(secrets, NS), NS, s, Defaults())
    assert r.input.kafka_brokers_sasl == ["b1:9093", "b2:9093"]
    assert r.output.api_key == "k" * 48


@pytest.mark.parametrize(("mutate", "reason", "words"), [
    (lambda s: s.pop("spark"), "SecretNotFound", ["spec.sparkCredentialsSecretRef", "Secret team/spark"]),
    (lambda s: s["spark"].pop("credentials.json"), "SecretKeyMissing", ["'credentials.json'"]),
    (lambda s: s["spark"].update({"credentials.json": "{not json"}), "InvalidSecret", ["not a JSON object"]),
    (lambda s: s["spark"].update({"credentials.json": '{"tenant_id": "x"}'}), "InvalidSecret",
     ["credentials.tenant_id_full"]),
    (lambda s: s["kafka"].pop("kafka_brokers_sasl"), "SecretKeyMissing",
     ["spec.input.connectionSecretRef", "'kafka_brokers_sasl'"]),
    (lambda s: s["kafka"].pop("password"), "SecretKeyMissing", ["needs `user` and `password`, or `api_key`"]),
    (lambda s: s["kafka"].update({"kafka_brokers_sasl": "[oops"}), "InvalidSecret", ["kafka_brokers_sasl"]),
    (lambda s: s["wml"].pop("password"), "SecretKeyMissing", ["spec.wml.credentialsSecretRef", "'password'"]),
    (lambda s: s["wml"].pop("url"), "MissingWMLEndpoint", ["spec.wml.url"]),
])
def test_problems_name_the_field_secret_and_key(mutate: Any, reason: str, words: list[str]) -> None:
    secrets = base_secrets()
    mutate(secrets)
    with pytest.raises(SpecProblem) as problem:
        resolve(DictSecrets(secrets, NS), NS, spec(), Defaults())
    assert problem.value.reason == reason
    for word in words:
        assert word in problem.value.message
    for value in ("kafka-password", "wml-password-value", "spark-secret-value"):
        assert value not in problem.value.message


def test_defaults_fill_the_endpoint() -> None:
    secrets = base_secrets()
    secrets["wml"] = {"username": "u", "password": "p"}
    s = spec(wml=None)
    with pytest.raises(SpecProblem) as problem:
        resolve(DictSecrets(secrets, NS), NS, s, Defaults())
    assert problem.value.reason == "MissingWMLEndpoint"
    defaults = Defaults(url="https://d", instance_id="di", credentials_secret=f"{NS}/wml")
    r = resolve(DictSecrets(secrets, NS), NS, s, defaults)
    assert (r.endpoint.url, r.endpoint.instance_id) == ("https://d", "di")


def test_hash_follows_what_the_deployment_is_built_from() -> None:
    secrets = base_secrets()
    h0 = resolve(DictSecrets(secrets, NS), NS, spec(), Defaults()).spec_hash
    secrets["wml"]["password"] = "rotated-login"  # WML login: not part of the build
    assert resolve(DictSecrets(secrets, NS), NS, spec(), Defaults()).spec_hash == h0
    secrets["kafka"]["password"] = "rotated-kafka"
    h1 = resolve(DictSecrets(secrets, NS), NS, spec(), Defaults()).spec_hash
    assert h1 != h0
    other = spec(output={"topic": "other", "connectionSecretRef": {"name": "kafka"}})
    assert resolve(DictSecrets(secrets, NS), NS, other, Defaults()).spec_hash != h1


def test_a_dead_letter_topic_is_part_of_the_hash_only_when_set() -> None:
    secrets = base_secrets()
    plain = resolve(DictSecrets(secrets, NS), NS, spec(), Defaults()).spec_hash
    same = spec(output={"topic": "out", "connectionSecretRef": {"name": "kafka"}, "deadLetterTopic": None})
    assert resolve(DictSecrets(secrets, NS), NS, same, Defaults()).spec_hash == plain  # an upgrade changes nothing
    dlq = spec(output={"topic": "out", "connectionSecretRef": {"name": "kafka"}, "deadLetterTopic": "dlq"})
    hashed = resolve(DictSecrets(secrets, NS), NS, dlq, Defaults()).spec_hash
    assert hashed != plain
    other = spec(output={"topic": "out", "connectionSecretRef": {"name": "kafka"}, "deadLetterTopic": "dlq2"})
    assert resolve(DictSecrets(secrets, NS), NS, other, Defaults()).spec_hash not in (plain, hashed)
