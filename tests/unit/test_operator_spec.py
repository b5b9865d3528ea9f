"""Spec validation: what the CRD cannot say, the model says, naming the field and never echoing values."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from wml_api.wire import describe_validation_error
from wml_operator.spec import parse_spec

GOOD: dict[str, Any] = {"modelId": "m1", "sparkCredentialsSecretRef": {"name": "spark", "key": "c.json"},
                        "input": {"topic": "in", "connectionSecretRef": {"name": "kafka"}},
                        "output": {"topic": "out", "connectionSecretRef": {"name": "kafka"}}}


def test_defaults() -> None:
    s = parse_spec(GOOD)
    assert (s.state, s.deletion_policy, s.restart_policy) == ("RUNNING", "Delete", "OnFailure")


@pytest.mark.parametrize(("change", "where"), [
    ({"state": "PAUSED"}, "spec.state"),
    ({"modelId": ""}, "spec.modelId"),
    ({"input": {"topic": "bad topic!", "connectionSecretRef": {"name": "kafka"}}}, "spec.input.topic"),
    ({"output": {"topic": "out"}}, "spec.output.connectionSecretRef"),
    ({"sparkCredentialsSecretRef": {"name": "Not_A_Name", "key": "k"}}, "spec.sparkCredentialsSecretRef.name"),
    ({"wml": {"url": "ftp://user:secret@host"}}, "spec.wml.url"),
    ({"typo": 1}, "spec.typo"),
    ({"output": {"topic": "out", "connectionSecretRef": {"name": "kafka"}, "deadLetterTopic": ""}},
     "spec.output.deadLetterTopic"),
    ({"output": {"topic": "out", "connectionSecretRef": {"name": "kafka"}, "deadLetterTopic": "a b"}},
     "spec.output.deadLetterTopic"),
    ({"output": {"topic": "out", "connectionSecretRef": {"name": "kafka"}, "deadLetterTopic": "out"}},
     "spec.output: Value error, deadLetterTopic must be another topic than the output topic"),
])
def test_invalid_specs_name_the_field(change: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_spec({**GOOD, **change})
    message = describe_validation_error(exc.value, "spec")
    assert where in message
    assert "secret@host" not in message


def test_a_dead_letter_topic_is_optional() -> None:
    assert parse_spec(GOOD).output.dead_letter_topic is None
    out = {"topic": "out", "connectionSecretRef": {"name": "kafka"}, "deadLetterTopic": "out-dlq"}
    assert parse_spec({**GOOD, "output": out}).output.dead_letter_topic == "out-dlq"
