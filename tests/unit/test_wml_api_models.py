"""The v3 wire models against the reference's own sample bodies (shared/reference/), plus what we added."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import ValidationError

from wml_api import (
    MASK,
    Deployment,
    DeploymentCreate,
    DeploymentList,
    DeploymentStatus,
    ErrorBody,
    KafkaConnection,
    PublishedModel,
    SparkHeaderError,
    SparkServiceInstance,
    WMLCredentials,
    WMLInstance,
    status_patch,
)
from wml_api.models import KafkaTarget
from wml_api.wire import describe_validation_error

# The create request of seed-streaming-deployments.fr.md (its sample keys, abridged broker list).
CREATE_BODY = json.loads("""{
 "name": "Pronostic des opinions", "type": "stream", "description": "Déploiement en flux",
 "input": {"connection": {
    "kafka_brokers_sasl": ["kafka01-prod01.messagehub.services.us-south.bluemix.net:9093",
                           "kafka02-prod01.messagehub.services.us-south.bluemix.net:9093"],
    "kafka_admin_url": "https://kafka-admin-prod01.messagehub.services.us-south.bluemix.net:443",
    "api_key": "Dv5kEVNNsbuJ9RFEKdUhIn2hruipIrsBolge6v1uQmTzEQti",
    "mqlight_lookup_url": "https://mqlight-lookup-prod01.messagehub.services.us-south.bluemix.net/Lookup?serviceId=5448397d-cb22-4698-8a2b-ffb04f43a4cb",
    "kafka_rest_url": "https://kafka-rest-prod01.messagehub.services.us-south.bluemix.net:443",
    "user": "Dv5kEVNNsbuJ9RFE", "password": "KdahIn2hruipIrsBolge6v1uQmTzEQti"},
   "source": {"topic": "sinput", "type": "kafka"}},
 "output": {"connection": {
    "kafka_brokers_sasl": ["kafka01-prod01.messagehub.services.us-south.bluemix.net:9093"],
    "api_key": "Dv5kEVNNsbuJ9RFEKdUhIn2hruipIrsBolge6v1uQmTzEQti",
    "user": "Dv5kEVNNsbuJ9RFE", "password": "KdahIn2hruipIrsBolge6v1uQmTzEQti"},
   "target": {"topic": "soutput", "type": "kafka"}}}""")

# The create response of the same page, plus fields the reference does not know (a real server sends more).
DEPLOYMENT = json.loads("""{
 "metadata": {"guid": "0f5e58ff-db0d-4d33-9a53-9c4e452cdfc2",
   "url": "https://ibm-watson-ml.mybluemix.net/v3/wml_instances/b5bd2368-cc4b-4cf1-aec0-49ed8daeb018/published_models/ceed18b3-ada2-42db-bf00-429f4e2c7601/deployments/0f5e58ff-db0d-4d33-9a53-9c4e452cdfc2",
   "created_at": "2017-06-28T12:39:01.474Z", "modified_at": "2017-06-28T12:39:04.274Z", "etag": "w/1"},
 "entity": {"runtime_environment": "spark-2.0", "name": "Pronostic des opinions",
   "instance_href": "https://ibm-watson-ml.mybluemix.net/v2/streaming/deployments/553f0ed7-b3fc-4659-ae45-c42c66cb5e04",
   "description": "Déploiement en flux",
   "published_model": {"author": {"name": "IBM", "email": ""}, "name": "Pronostic des opinions",
     "url": "https://ibm-watson-ml.mybluemix.net/v3/wml_instances/b5bd2368-cc4b-4cf1-aec0-49ed8daeb018/published_models/ceed18b3-ada2-42db-bf00-429f4e2c7601",
     "guid": "ceed18b3-ada2-42db-bf00-429f4e2c7601",
     "description": "Pronostic des opinions sur un sujet spécifique pour une entreprise de marketing.",
     "created_at": "2017-06-28T11:57:47.636Z"},
   "model_type": "sparkml-model-2.0", "status": "En cours d'initialisation",
   "output": {"connection": {"kafka_brokers_sasl": ["kafka01-prod01.messagehub.services.us-south.bluemix.net:9093"],
       "api_key": "gDic7zCjvBJQjMjBMGcVHeBLI5VkqELVQsiuMx8Ka0XtddRk", "user": "gDic7zCjvBJQjMjB",
       "password": "MGcVHeBLI5VkqELVQsiuMx8Ka0XtddRk"},
     "target": {"topic": "streamingo", "type": "kafka"}},
   "type": "stream",
   "deployed_version": {"url": "https://ibm-watson-ml.mybluemix.net/v2/artifacts/models/ceed18b3-ada2-42db-bf00-429f4e2c7601/versions/848e632f-1ffc-4241-992b-6301686eadbd",
     "guid": "848e632f-1ffc-4241-992b-6301686eadbd", "created_at": "2017-06-28T11:57:10.997Z"},
   "spark_service": {"credentials": {"tenant_id": "s000-5f656e4e614595-e0ddb27c0670",
       "cluster_master_url": "https://spark.bluemix.net",
       "tenant_id_full": "fba311a7-532e-4aad-9000-5f656e4e6145_bd856e56-b4f4-4e82-9b95-e0ddb27c0670",
       "tenant_secret": "d9627f06-7a25-46ed-b833-93fe799654c4", "instance_id": "fba311a7-532e-4aad-9000-5f656e4e6145",
       "plan": "ibm.SparkService.PayGoPersonal"}, "version": "2.0"},
   "input": {"connection": {"kafka_brokers_sasl": ["kafka01-prod01.messagehub.services.us-south.bluemix.net:9093"],
       "api_key": "gDic7zCjvBJQjMjBMGcVHeBLI5VkqELVQsiuMx8Ka0XtddRk", "user": "gDic7zCjvBJQjMjB",
       "password": "MGcVHeBLI5VkqELVQsiuMx8Ka0XtddRk"},
     "source": {"topic": "streamingi", "type": "kafka"}},
   "scoring_url": "https://example.invalid/future-field"}}""")

# The Spark credentials of the same page, as its `echo '...' | base64` builds the header.
SPARK_JSON = ('{"credentials": {"tenant_id": "s068-ade10277b64956-05b1d10fv12b","tenant_id_full": '
              '"00fd89e6-8cf2-4712-a068-ade10277b649_41f37bf2-1b95-4c65-a156-05b1d10fb12b","cluster_master_url": '
              '"https://spark.bluemix.net","instance_id": "00fd89e6-8cf2-4712-a068-ade10277b649","tenant_secret": '
              '"c74c37cf-482a-4da4-836e-f32ca26ccbb9","plan": "ibm.SparkService.PayGoPersonal"},"version": "2.0"}\n')
SPARK_SECRET = "c74c37cf-482a-4da4-836e-f32ca26ccbb9"


def test_create_body_from_the_reference_parses_and_round_trips() -> None:
    body = DeploymentCreate.model_validate(CREATE_BODY)
    assert body.type == "stream"
    assert body.input is not None
    assert body.output is not None
    assert body.input.source.topic == "sinput"
    assert body.output.target.topic == "soutput"
    assert body.input.connection.security_protocol == "SASL_SSL"  # the original's default, ours to add
    dumped = body.model_dump(mode="json", exclude_none=True)
    # What the service stores must keep the secrets it needs to reach Kafka.
    assert dumped["input"]["connection"]["password"] == "KdahIn2hruipIrsBolge6v1uQmTzEQti"
    assert DeploymentCreate.model_validate(dumped) == body


def test_deployment_sample_with_unknown_fields_parses() -> None:
    deployment = Deployment.model_validate(DEPLOYMENT)
    assert deployment.id == "0f5e58ff-db0d-4d33-9a53-9c4e452cdfc2"
    assert deployment.model_id == "ceed18b3-ada2-42db-bf00-429f4e2c7601"
    # A localized or unknown status is kept as-is rather than refused.
    assert deployment.status == "En cours d'initialisation"
    assert deployment.entity.published_model is not None
    assert deployment.entity.published_model.author is not None
    assert deployment.entity.published_model.author.name == "IBM"
    assert deployment.entity.model_extra == {"scoring_url": "https://example.invalid/future-field"}
    assert deployment.metadata.model_extra == {"etag": "w/1"}
    assert deployment.failure_message is None


def test_repr_of_a_deployment_never_shows_a_secret() -> None:
    deployment = Deployment.model_validate(DEPLOYMENT)
    text = repr(deployment) + str(deployment)
    for secret in ("MGcVHeBLI5VkqELVQsiuMx8Ka0XtddRk", "gDic7zCjvBJQjMjBMGcVHeBLI5VkqELVQsiuMx8Ka0XtddRk",
                   "d9627f06-7a25-46ed-b833-93fe799654c4"):
        assert secret not in text
    assert MASK in text
    assert "streamingi" in text  # masking is targeted, not a blanket blackout


def test_failure_message_prefers_status_details_then_status_message() -> None:
    failed = json.loads(json.dumps(DEPLOYMENT))
    failed["entity"].update(status="FAILED", status_message="fallback",
                            status_details={"failure": {"errors": [{"code": "kafka_auth", "message": "SASL failed"}]}})
    assert Deployment.model_validate(failed).failure_message == "SASL failed"
    del failed["entity"]["status_details"]
    assert Deployment.model_validate(failed).failure_message == "fallback"


def test_model_id_falls_back_to_the_metadata_url() -> None:
    data = json.loads(json.dumps(DEPLOYMENT))
    del data["entity"]["published_model"]
    assert Deployment.model_validate(data).model_id == "ceed18b3-ada2-42db-bf00-429f4e2c7601"


def test_brokers_accept_a_comma_separated_string() -> None:
    conn = KafkaConnection.model_validate({"kafka_brokers_sasl": " a:9093, b:9093 ,,c:9093 "})
    assert conn.kafka_brokers_sasl == ["a:9093", "b:9093", "c:9093"]
    with pytest.raises(ValidationError):
        KafkaConnection.model_validate({"kafka_brokers_sasl": " , "})


def test_security_protocol_is_limited_to_the_two_sasl_modes() -> None:
    conn = KafkaConnection(kafka_brokers_sasl=["a:9092"], security_protocol="SASL_PLAINTEXT")
    assert conn.security_protocol == "SASL_PLAINTEXT"
    with pytest.raises(ValidationError):
        KafkaConnection.model_validate({"kafka_brokers_sasl": ["a:9092"], "security_protocol": "PLAINTEXT"})


def test_masked_replaces_only_secrets_that_are_set() -> None:
    conn = KafkaConnection.model_validate({"kafka_brokers_sasl": ["a:9093"], "user": "u", "password": "pw",
                                           "apikey": "legacy"})
    masked = conn.masked()
    assert masked.password == MASK
    assert masked.api_key is None
    assert masked.user == "u"
    assert masked.model_dump()["apikey"] == MASK
    assert conn.password == "pw"  # a copy, not a mutation
    assert "pw" not in repr(conn)
    assert "legacy" not in str(conn)


def test_create_accepts_other_types_so_the_server_can_refuse_them_clearly() -> None:
    assert DeploymentCreate(name="x", type="online").type == "online"
    assert DeploymentCreate(name="x").type == "stream"
    with pytest.raises(ValidationError):
        DeploymentCreate.model_validate({"name": "x", "type": "stream-ish"})
    with pytest.raises(ValidationError):
        DeploymentCreate.model_validate({**CREATE_BODY, "input": {**CREATE_BODY["input"], "source": {"topic": ""}}})


def test_status_patch_is_the_single_replace_operation() -> None:
    assert status_patch(DeploymentStatus.STOPPED) == [{"op": "replace", "path": "/status", "value": "STOPPED"}]
    assert json.dumps(status_patch("RUNNING")) == '[{"op": "replace", "path": "/status", "value": "RUNNING"}]'


def test_lists_instance_model_and_error_bodies() -> None:
    page = DeploymentList.model_validate({"count": 3, "limit": 1, "resources": [DEPLOYMENT],
                                          "first": {"url": "/a"}, "next": {"url": "/b"}, "extra": 1})
    assert page.count == 3
    assert page.next is not None
    assert page.next.url == "/b"
    assert isinstance(page.resources[0], Deployment)
    assert DeploymentList.model_validate({"resources": [DEPLOYMENT]}).count == 1
    url = "https://h/v3/wml_instances/i"
    instance = WMLInstance.model_validate({
        "metadata": {"guid": "i", "url": url, "created_at": "t"},
        "entity": {"status": "Active", "plan_id": "free", "published_models": {"url": url + "/published_models"},
                   "deployments": {"url": url + "/deployments"}, "region": "local"}})
    assert instance.id == "i"
    assert instance.entity.deployments is not None
    model = PublishedModel.model_validate({
        "metadata": {"guid": "m", "url": url + "/published_models/m"},
        "entity": {"name": "Sentiment Prediction", "author": {"name": "IBM"}, "deployments": {"count": 2, "url": "/d"},
                   "latest_version": {"guid": "v", "url": "/v"}, "training_data_schema": {}}})
    assert model.entity.deployments is not None
    assert model.entity.deployments.count == 2
    error = ErrorBody.model_validate({"trace": "t", "errors": [{"code": "not_found", "message": "gone"}]})
    assert error.errors[0].code == "not_found"


def _spark() -> SparkServiceInstance:
    return SparkServiceInstance.from_header(base64.b64encode(SPARK_JSON.encode()).decode())


def test_spark_header_round_trip_and_masked_repr() -> None:
    spark = _spark()
    assert spark.credentials.tenant_secret == SPARK_SECRET
    assert spark.version == "2.0"
    assert SparkServiceInstance.from_header(spark.to_header()) == spark
    assert SPARK_SECRET not in repr(spark)
    assert SPARK_SECRET not in str(spark.credentials)
    # `base64` without --wrap=0 breaks its output into lines; a pasted header may keep them.
    wrapped = base64.encodebytes(SPARK_JSON.encode()).decode()
    assert "\n" in wrapped.strip()
    assert SparkServiceInstance.from_header(wrapped) == spark


@pytest.mark.parametrize(("value", "reason"), [
    ("", "empty"),
    ("not base64 at all!", "not valid base64"),
    (base64.b64encode(b"\xff\xfe{").decode(), "not base64 of a JSON"),
    (base64.b64encode(b'{"version": "2.0"}').decode(), "credentials"),
    (base64.b64encode(json.dumps({"credentials": {"tenant_secret": SPARK_SECRET}}).encode()).decode(), "tenant_id"),
])
def test_undecodable_spark_header_is_a_clear_value_error(value: str, reason: str) -> None:
    with pytest.raises(SparkHeaderError) as caught:
        SparkServiceInstance.from_header(value)
    assert isinstance(caught.value, ValueError)  # what the service catches
    assert reason in str(caught.value)
    assert SPARK_SECRET not in str(caught.value)


def test_credentials_mask_the_password_and_key_caches_by_digest() -> None:
    creds = WMLCredentials("alice", "s3cret-pw")
    assert "s3cret-pw" not in repr(creds)
    assert "s3cret-pw" not in str(creds)
    assert "alice" in repr(creds)
    assert creds == WMLCredentials("alice", "s3cret-pw")
    assert creds != WMLCredentials("alice", "other")
    assert len({creds, WMLCredentials("alice", "s3cret-pw")}) == 1
    key: Any = creds.cache_key("https://h/")
    assert key[0] == "https://h"
    assert "s3cret-pw" not in key
    assert len(key[2]) == 64
    with pytest.raises(ValueError, match="empty"):
        WMLCredentials("alice", "")


def test_a_dead_letter_topic_is_another_non_empty_topic() -> None:
    assert KafkaTarget(topic="out", dead_letter_topic="out-dlq").dead_letter_topic == "out-dlq"
    assert KafkaTarget(topic="out").dead_letter_topic is None
    assert "dead_letter_topic" not in KafkaTarget(topic="out").model_dump(exclude_none=True)
    with pytest.raises(ValidationError) as empty:
        KafkaTarget(topic="out", dead_letter_topic="")
    assert "dead_letter_topic: String should have at least 1 character" in describe_validation_error(empty.value)
    with pytest.raises(ValidationError) as same:
        KafkaTarget(topic="out", dead_letter_topic="out")
    assert "another topic than the output topic 'out'" in describe_validation_error(same.value)
