"""The parts of wml_api that both sides now share: URL templates, deep masking, validation messages."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from wml_api.models import (
    MASK,
    DeploymentCreate,
    SparkService,
    StreamInput,
    describe_errors,
    describe_validation_error,
)
from wml_api.paths import INSTANCE_DEPLOYMENT, MODEL_DEPLOYMENT, fill

pytestmark = pytest.mark.unit


def test_fill_quotes_every_id_and_refuses_empty_ones() -> None:
    assert fill(INSTANCE_DEPLOYMENT, instance_id="i", deployment_id="d") == "/v3/wml_instances/i/deployments/d"
    assert fill(MODEL_DEPLOYMENT, instance_id="../..", model_id="a/b", deployment_id="d?x") == \
        "/v3/wml_instances/..%2F../published_models/a%2Fb/deployments/d%3Fx"
    with pytest.raises(ValueError, match="empty id"):
        fill(INSTANCE_DEPLOYMENT, instance_id="i", deployment_id="")


def test_masked_reaches_every_depth_and_unknown_fields() -> None:
    given = StreamInput.model_validate({
        "connection": {"kafka_brokers_sasl": ["b:9093"], "user": "u", "password": "pw-1", "api_key": "k-1",
                       "extra": {"token": "t-1", "keep": 1}},
        "source": {"topic": "in"}})
    shown = given.masked()
    assert isinstance(shown, StreamInput)
    dumped = shown.model_dump(mode="json")
    assert dumped["connection"]["password"] == dumped["connection"]["api_key"] == MASK
    assert dumped["connection"]["extra"] == {"token": MASK, "keep": 1}
    assert dumped["connection"]["user"] == "u"
    assert given.connection.password == "pw-1"  # a copy
    spark = SparkService.model_validate({"credentials": {"tenant_secret": "s-1", "tenant_id": "t"}}).masked()
    assert spark.credentials == {"tenant_secret": MASK, "tenant_id": "t"}


def test_validation_messages_with_and_without_a_prefix() -> None:
    with pytest.raises(ValidationError) as caught:
        DeploymentCreate.model_validate({"input": {"connection": {"kafka_brokers_sasl": [], "password": "s3cret"}}})
    plain = describe_validation_error(caught.value)
    assert plain.startswith("name: Field required; input.connection.kafka_brokers_sasl: List should have at least")
    assert "s3cret" not in plain
    assert describe_validation_error(caught.value, "spec").startswith("spec.name: Field required; spec.input.")
    assert describe_validation_error(caught.value, limit=1).endswith("(and 2 more)")

    class Whole(BaseModel):
        n: int

    with pytest.raises(ValidationError) as whole:
        Whole.model_validate(3)
    assert describe_validation_error(whole.value, "spec").startswith("spec: ")
    assert describe_validation_error(whole.value).startswith("body: ")


def test_describe_errors_drops_fastapi_leading_body() -> None:
    errors = [{"loc": ("body", "name"), "msg": "Field required", "input": "hunter2"}]
    assert describe_errors(errors, drop_first="body") == "name: Field required"
    assert describe_errors([{"loc": ("body",), "msg": "bad"}], drop_first="body") == "body: bad"
