"""Connections as the engine gets them: librdkafka settings, Message Hub api keys, secrets kept out of text."""

from __future__ import annotations

import uuid

from wml_server.engine.clients import ErrorInbox, consumer_config, producer_config
from wml_server.engine.failures import redact
from wml_server.engine.spec import KafkaEndpoint, KafkaTopic, StreamSpec
from wml_server.models.sentiment import SentimentModel

API_KEY = "ABCDEFGHIJKLMNOP" + "s3cr3t-rest-of-the-api-key-0123456789"


def test_user_and_password() -> None:
    endpoint = KafkaEndpoint(["b1:9093", "b2:9093"], user="wml", password="pw-123456")
    assert endpoint.to_librdkafka() == {
        "bootstrap.servers": "b1:9093,b2:9093", "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
        "sasl.username": "wml", "sasl.password": "pw-123456"}


def test_api_key_is_split_sixteen_characters_of_user_then_password() -> None:
    config = KafkaEndpoint(["b:9093"], api_key=API_KEY, security_protocol="SASL_PLAINTEXT").to_librdkafka()
    assert config["sasl.username"] == "ABCDEFGHIJKLMNOP"
    assert config["sasl.password"] == API_KEY[16:]
    assert config["security.protocol"] == "SASL_PLAINTEXT"


def test_user_and_password_win_over_an_api_key() -> None:
    endpoint = KafkaEndpoint(["b:9093"], user="u", password="p-1234", api_key=API_KEY)
    assert endpoint.sasl_credentials() == ("u", "p-1234")
    # ...but a user without a password falls back to the api key
    assert KafkaEndpoint(["b:9093"], user="u", api_key=API_KEY).sasl_credentials() == (API_KEY[:16], API_KEY[16:])


def test_repr_and_str_mask_secrets() -> None:
    endpoint = KafkaEndpoint(["b:9093"], user="wml", password="hunter2-pw", api_key=API_KEY)
    spec = StreamSpec(str(uuid.uuid4()), SentimentModel(), KafkaTopic("in", endpoint), KafkaTopic("out", endpoint))
    for text in (repr(endpoint), str(endpoint), repr(spec)):
        assert "hunter2-pw" not in text
        assert API_KEY[16:] not in text
        assert API_KEY[:16] not in text
        assert "***" in text
        assert "wml" in text
    assert "password=None" in repr(KafkaEndpoint(["b:9093"]))


def test_secrets_include_both_halves_of_an_api_key() -> None:
    endpoint = KafkaEndpoint(["b:9093"], password="hunter2-pw", api_key=API_KEY)
    assert set(endpoint.secrets()) == {"hunter2-pw", API_KEY, API_KEY[:16], API_KEY[16:]}


def test_redact() -> None:
    text = f"login {API_KEY[:16]} with {API_KEY[16:]} failed; sasl.password=whatever user=x password: abc"
    clean = redact(text, [API_KEY, API_KEY[:16], API_KEY[16:]])
    assert API_KEY[:16] not in clean
    assert API_KEY[16:] not in clean
    assert "whatever" not in clean
    assert "abc" not in clean
    assert "user=x" in clean


def test_client_configs_are_exactly_once() -> None:
    endpoint = KafkaEndpoint(["b:9093"], user="wml", password="pw-123456")
    deployment_id = str(uuid.uuid4())
    spec = StreamSpec(deployment_id, SentimentModel(), KafkaTopic("in", endpoint), KafkaTopic("out", endpoint))
    consumer = consumer_config(spec, ErrorInbox())
    assert consumer["group.id"] == f"wml-{deployment_id}"
    assert consumer["enable.auto.commit"] is False
    assert consumer["isolation.level"] == "read_committed"
    assert consumer["auto.offset.reset"] == "earliest"
    producer = producer_config(spec, ErrorInbox(), 60_000)
    assert producer["transactional.id"] == f"wml-{deployment_id}"
    assert producer["enable.idempotence"] is True
    assert producer["sasl.password"] == "pw-123456"


def test_the_engine_copies_of_contract_constants_match_the_contract() -> None:
    # The engine deliberately imports nothing of wml_api (engine/state.py says why); this keeps its copies honest.
    import subprocess
    import sys

    from wml_api.models import MASK, DeploymentStatus
    from wml_server.engine import spec, state

    assert {state.INITIALIZING, state.RUNNING, state.STOPPED, state.FAILED} == {s.value for s in DeploymentStatus}
    assert spec._MASK == MASK
    loaded = subprocess.run([sys.executable, "-c", "import sys, wml_server.engine.__main__; "
                             "print(sorted(m for m in ('wml_api', 'pydantic', 'fastapi') if m in sys.modules))"],
                            capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == "[]"
