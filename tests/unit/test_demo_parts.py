"""`make demo`'s pure parts: the sample it applies, the Secrets it fills in, the tweets and the summary."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from wml_localplatform import demo
from wml_localplatform.tweets import Tweet, parse


def test_the_sample_is_applied_unchanged_but_for_namespace_and_endpoint() -> None:
    original = yaml.safe_load(demo.SAMPLE.read_text())
    resource = demo.sample_resource("marketing", "http://127.0.0.1:9443")
    assert resource["metadata"]["namespace"] == "marketing"
    assert resource["spec"]["wml"]["url"] == "http://127.0.0.1:9443"
    resource["metadata"].pop("namespace")
    resource["spec"]["wml"]["url"] = original["spec"]["wml"]["url"]
    assert resource == original


def _secrets(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return demo.sample_secrets(
        resource, "marketing",
        wml={"username": "marketing", "password": "pw-wml", "instance_id": "i-1"},
        kafka={"kafka_brokers_sasl": '["127.0.0.1:1"]', "user": "wml", "password": "pw-kafka",
               "security_protocol": "SASL_PLAINTEXT"},
        spark_json=json.dumps({"tenant_id": "t"}))


def test_every_placeholder_of_the_sample_secrets_gets_a_real_value() -> None:
    resource = demo.sample_resource("marketing", "http://127.0.0.1:9443")
    docs = _secrets(resource)
    placeholders = {d["metadata"]["name"]: set(d["stringData"])
                    for d in yaml.safe_load_all(demo.SAMPLE_SECRETS.read_text()) if d}
    assert {d["metadata"]["name"] for d in docs} == set(placeholders)
    for doc in docs:
        assert doc["metadata"]["namespace"] == "marketing"
        assert placeholders[doc["metadata"]["name"]] <= set(doc["stringData"])
        assert "change-me" not in json.dumps(doc)
    spec = resource["spec"]
    by_name = {d["metadata"]["name"]: d["stringData"] for d in docs}
    assert by_name[spec["wml"]["credentialsSecretRef"]["name"]]["password"] == "pw-wml"
    assert by_name[spec["input"]["connectionSecretRef"]["name"]]["password"] == "pw-kafka"
    assert spec["sparkCredentialsSecretRef"]["key"] in by_name[spec["sparkCredentialsSecretRef"]["name"]]


def test_a_secret_key_the_demo_cannot_fill_is_an_error_not_a_placeholder_left_behind() -> None:
    resource = demo.sample_resource("marketing", "http://127.0.0.1:9443")
    resource["spec"]["wml"]["credentialsSecretRef"]["name"] = "renamed"
    with pytest.raises(demo.DemoError, match="wml-credentials is not referenced"):
        _secrets(resource)


def test_tweets_are_picked_the_same_way_every_run() -> None:
    tweets = [Tweet(str(i), 1.0 if i % 2 else -1.0, f"t{i}") for i in range(1000)]
    picked = demo.pick_tweets(tweets, 300)
    assert picked == demo.pick_tweets(list(tweets), 300)
    assert len({t.id for t in picked}) == 300
    key, value = demo.record(picked[0])
    assert key == picked[0].id.encode()
    assert json.loads(value) == {"id": picked[0].id, "tweet": picked[0].text}


def test_summary_counts_labels_and_agreement() -> None:
    truth = {"a": Tweet("a", 2.0, "good"), "b": Tweet("b", -1.5, "bad"), "c": Tweet("c", 0.5, "meh")}
    records = [{"id": "a", "prediction": "POSITIVE"}, {"id": "b", "prediction": "POSITIVE"},
               {"id": "c", "prediction": "NEGATIVE"}, {"id": "x", "error": "no text"}]
    summary = demo.summarize(records, truth)
    assert summary.table == [[1, 1], [1, 0]]
    assert summary.agree == 1
    assert summary.errors == 1
    lines = summary.lines()
    assert lines[0].split() == ["model", "POSITIVE", "model", "NEGATIVE", "total"]
    assert "agreement with the human raters: 1 of 3 (33.3 %)" in lines
    assert "records the service could not score: 1" in lines


def test_tweets_ground_truth_format() -> None:
    tweets = parse(b"1\t2.6\tI love it\r\n2\t-1.2\tnope\r\n\r\n")
    assert tweets == [Tweet("1", 2.6, "I love it"), Tweet("2", -1.2, "nope")]
    assert [t.label for t in tweets] == ["POSITIVE", "NEGATIVE"]
    with pytest.raises(ValueError, match="line 1"):
        parse(b"only\ttwo\n")
