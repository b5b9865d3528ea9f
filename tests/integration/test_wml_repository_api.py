"""The repository API (`/v3/ml_assets/models`) of the real service over HTTP: publishing users' models.

Models are checked by loading them in the service's sandboxed workers, so these tests run real worker processes.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import pytest
import requests
import skops.io
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tests.integration.test_wml_service_api import client_for, spark
from wml_api import errors as E
from wml_api.client import WMLClient
from wml_api.models import (
    DeploymentCreate,
    KafkaConnection,
    StreamInput,
    StreamOutput,
)
from wml_api.repository import Framework, ModelAssetCreate
from wml_localplatform.wmlservice import WMLService, WMLUser

pytestmark = pytest.mark.integration
SCHEMA = {"type": "struct", "fields": [{"name": "tweet", "type": "string", "nullable": False, "metadata": {}}]}


def text_pipeline() -> Pipeline:
    texts = ["I love it", "great day", "so happy", "awful", "I hate this", "terrible news"] * 3
    labels = ["POSITIVE"] * 3 + ["NEGATIVE"] * 3
    return Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())]).fit(texts, labels * 3)


def skops_bytes() -> bytes:
    return skops.io.dumps(text_pipeline())


def pickled_tar_bytes() -> bytes:
    """As the v3 client uploads a pipeline: a .tar.gz holding `./scikit_model.pkl`, a joblib dump."""
    model = io.BytesIO()
    joblib.dump(text_pipeline(), model)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("./scikit_model.pkl")
        info.size = len(model.getvalue())
        tar.addfile(info, io.BytesIO(model.getvalue()))
    return out.getvalue()


def mllib_tar_bytes() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in (("model/metadata/part-00000",
                            b'{"class":"org.apache.spark.ml.PipelineModel","sparkVersion":"3.5.0"}\n'),
                           ("model/stages/0_tok/metadata/part-00000", b'{"class":"x"}\n')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def meta(name: str = "Tweets (tf-idf)", framework: str = "scikit-learn", **extra: Any) -> ModelAssetCreate:
    return ModelAssetCreate(name=name, framework=Framework(name=framework), input_data_schema=SCHEMA,
                            label_column="label", label_values=["NEGATIVE", "POSITIVE"], **extra)


@pytest.fixture
def api(wml_api_service: WMLService, wml_user: WMLUser) -> WMLClient:
    return client_for(wml_api_service, wml_user)


class Raw:
    """Plain HTTP with the user's token, for what the client does not say (status codes, headers)."""

    def __init__(self, service: WMLService, user: WMLUser) -> None:
        self.url = service.url
        token = requests.get(f"{service.url}/v3/identity/token", auth=(user.username, user.password), timeout=10)
        self.headers = {"Authorization": f"Bearer {token.json()['token']}"}

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.url + path, headers={**self.headers, **kwargs.pop("headers", {})},
                                timeout=60, **kwargs)

    def new_model(self, body: ModelAssetCreate | None = None) -> tuple[str, str]:
        resp = self("POST", "/v3/ml_assets/models", json=(body or meta()).model_dump(mode="json", exclude_none=True))
        assert resp.status_code == 201, resp.text
        entity = resp.json()["entity"]
        return resp.json()["metadata"]["guid"], entity["model_version"]["guid"]

    def upload(self, model_id: str, version_id: str, content: bytes) -> requests.Response:
        return self("PUT", f"/v3/ml_assets/models/{model_id}/versions/{version_id}/content", data=content)


@pytest.fixture
def raw(wml_api_service: WMLService, wml_user: WMLUser) -> Raw:
    return Raw(wml_api_service, wml_user)


def error_code(resp: requests.Response) -> str:
    return str(resp.json()["errors"][0]["code"])


def test_a_skops_model_is_published_and_listed_with_its_metadata(api: WMLClient, raw: Raw) -> None:
    content = skops_bytes()
    asset = api.publish_model(meta(), io.BytesIO(content))
    assert asset.entity.content_status is not None
    assert asset.entity.content_status.state == "persisted"
    assert asset.entity.content_format == "skops"
    assert asset.entity.model_type is not None
    assert asset.entity.model_type.startswith("scikit-learn-")

    published = api.get_published_model(asset.id)
    assert published.entity.name == "Tweets (tf-idf)"
    assert published.entity.model_type == asset.entity.model_type
    assert published.entity.input_data_schema == SCHEMA
    assert published.entity.label_col == "label"
    assert published.entity.latest_version is not None
    assert asset.entity.latest_version is not None
    assert published.entity.latest_version.guid == asset.entity.latest_version.guid
    assert asset.id in [m.id for m in api.list_published_models()]
    assert asset.id in [m.id for m in api.list_model_assets()]
    # The content comes back as it was sent, and its size is what the v3 client's load asks for.
    version = asset.entity.latest_version.guid
    assert raw("GET", f"/v3/ml_assets/models/{asset.id}/content").content == content
    sized = raw("GET", f"/v3/ml_assets/models/{asset.id}/versions/{version}", params={"size": "true"}).json()
    assert sized["contentSize"] == len(content)


def test_a_pickled_pipeline_as_the_v3_client_uploads_it_is_published(raw: Raw, api: WMLClient) -> None:
    model_id, version_id = raw.new_model()
    resp = raw.upload(model_id, version_id, pickled_tar_bytes())
    assert resp.status_code == 200, resp.text
    assert resp.json()["entity"]["content_format"] == "pickle-tar"
    assert model_id in [m.id for m in api.list_published_models()]


@pytest.mark.parametrize(("content", "code"), [
    (b"", "invalid_model_content"),
    (b"this is not a model" * 10, "invalid_model_content"),
    (pickle.dumps({"not": "a model"})[:-5], "invalid_model_content"),  # a truncated pickle: only loading tells
    (b"PK\x03\x04broken zip", "invalid_model_content"),
    (pickled_tar_bytes()[:100], "invalid_model_content"),  # a cut archive
])
def test_corrupt_content_gets_a_400_and_nothing_is_stored(raw: Raw, api: WMLClient, content: bytes,
                                                          code: str) -> None:
    model_id, version_id = raw.new_model()
    resp = raw.upload(model_id, version_id, content)
    assert resp.status_code == 400, resp.text
    assert error_code(resp) == code
    # Nothing half-stored: the version still waits for content, the model is not deployable or listed.
    version = raw("GET", f"/v3/ml_assets/models/{model_id}/versions/{version_id}").json()
    assert version["entity"]["content_status"]["state"] == "pending"
    assert model_id not in [m.id for m in api.list_published_models()]
    with pytest.raises(E.NotFound):
        api.get_published_model(model_id)
    # ... and the same version takes a good content afterwards.
    assert raw.upload(model_id, version_id, skops_bytes()).status_code == 200


def test_a_model_that_is_no_scikit_learn_model_is_refused(raw: Raw) -> None:
    model_id, version_id = raw.new_model()
    resp = raw.upload(model_id, version_id, pickle.dumps(["a", "list", "is", "no", "model"]))
    assert resp.status_code == 400
    assert error_code(resp) == "invalid_model_content"
    assert "predict" in resp.json()["errors"][0]["message"]


@pytest.mark.parametrize(("body", "code"), [
    ({"name": "x", "framework": {"name": "tensorflow", "version": "1.5"}}, "unsupported_framework"),
    ({"name": "x", "framework": {"name": "scikit-learn"}, "input_data_schema": {"type": "struct", "fields": []}},
     "invalid_input_schema"),
    ({"name": "x", "framework": {"name": "scikit-learn"},
      "input_data_schema": {"fields": [{"name": "a", "type": "map<string,int>"}]}}, "invalid_input_schema"),
    ({"name": "x", "framework": {"name": "scikit-learn"}, "input_data_schema": "tweet:string"},
     "invalid_input_schema"),
    ({"name": "x"}, "invalid_request"),
])
def test_a_bad_model_body_gets_a_specific_400(raw: Raw, api: WMLClient, body: dict[str, Any], code: str) -> None:
    before = len(api.list_model_assets())
    resp = raw("POST", "/v3/ml_assets/models", json=body)
    assert resp.status_code == 400, resp.text
    assert error_code(resp) == code
    assert len(api.list_model_assets()) == before


def test_content_over_the_limit_gets_413_and_leaves_no_file(make_wml_service: Callable[..., WMLService],
                                                             tmp_path: Path) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false", WML_SERVER_MODEL_MAX_BYTES="4096")
    user = service.add_user()
    raw = Raw(service, user)
    model_id, version_id = raw.new_model()
    big = skops_bytes() + b"\0" * 5000
    resp = raw.upload(model_id, version_id, big)
    assert resp.status_code == 413
    assert error_code(resp) == "model_content_too_large"

    def chunks() -> Any:  # no Content-Length: the limit holds while the body streams in
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]

    resp = raw.upload(model_id, version_id, chunks())  # type: ignore[arg-type]
    assert resp.status_code == 413
    models_dir = service.dir / "data" / "models"
    files = [p for p in models_dir.rglob("*") if p.is_file()] if models_dir.exists() else []
    assert files == []


def test_pickled_models_can_be_turned_off(make_wml_service: Callable[..., WMLService]) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false", WML_SERVER_PICKLED_MODELS="false")
    raw = Raw(service, service.add_user())
    model_id, version_id = raw.new_model()
    resp = raw.upload(model_id, version_id, pickled_tar_bytes())
    assert resp.status_code == 400
    assert error_code(resp) == "pickled_models_disabled"
    assert raw.upload(model_id, version_id, skops_bytes()).status_code == 200


def deployment(name: str = "tweets") -> DeploymentCreate:
    conn = KafkaConnection(kafka_brokers_sasl=["127.0.0.1:9"], user="wml", password="p",
                           security_protocol="SASL_PLAINTEXT")
    return DeploymentCreate(name=name, input=StreamInput(connection=conn, source={"topic": "in"}),
                            output=StreamOutput(connection=conn, target={"topic": "out"}))


def test_a_deployment_of_a_user_model_shows_what_it_runs_and_keeps_its_version(api: WMLClient, raw: Raw) -> None:
    asset = api.publish_model(meta(), io.BytesIO(skops_bytes()))
    first = asset.entity.latest_version
    assert first is not None
    created = api.create_deployment(asset.id, deployment(), spark())
    assert created.entity.deployable_asset is not None
    assert created.entity.deployable_asset.guid == asset.id
    assert created.entity.deployable_asset.type == "model"
    assert "model" in (created.entity.deployable_asset.url or "")
    assert created.entity.deployed_version is not None
    assert created.entity.deployed_version.guid == first.guid
    assert created.entity.model_type == asset.entity.model_type

    # A new version is the model's latest; the deployment keeps running the one it was created with.
    new = raw("POST", f"/v3/ml_assets/models/{asset.id}/versions").json()["metadata"]["guid"]
    assert raw.upload(asset.id, new, skops_bytes()).status_code == 200
    assert api.get_published_model(asset.id).entity.latest_version.guid == new  # type: ignore[union-attr]
    assert api.get_deployment(asset.id, created.id).entity.deployed_version.guid == first.guid  # type: ignore

    # A model with deployments is not deleted from under them.
    resp = raw("DELETE", f"/v3/ml_assets/models/{asset.id}")
    assert resp.status_code == 400
    assert error_code(resp) == "model_has_deployments"
    api.delete_deployment(asset.id, created.id)
    assert raw("DELETE", f"/v3/ml_assets/models/{asset.id}").status_code == 204
    assert raw("GET", f"/v3/ml_assets/models/{asset.id}").status_code == 404
    assert asset.id not in [m.id for m in api.list_published_models()]


def test_a_spark_model_is_stored_and_listed_but_not_deployed_here(api: WMLClient) -> None:
    asset = api.publish_model(meta("Tweets (Spark)", framework="mllib"), io.BytesIO(mllib_tar_bytes()))
    assert asset.entity.model_type is not None
    assert asset.entity.model_type.startswith("mllib-")
    assert asset.entity.content_format == "mllib-tar"
    assert asset.id in [m.id for m in api.list_published_models()]
    with pytest.raises(E.WMLError) as refused:
        api.create_deployment(asset.id, deployment(), spark())
    assert "model_not_deployable" in str(refused.value)


def test_a_model_without_a_schema_is_stored_but_a_deployment_says_what_is_missing(api: WMLClient) -> None:
    body = ModelAssetCreate(name="no schema", framework=Framework(name="scikit-learn"))
    asset = api.publish_model(body, io.BytesIO(skops_bytes()))
    with pytest.raises(E.WMLError) as refused:
        api.create_deployment(asset.id, deployment(), spark())
    assert "missing_input_schema" in str(refused.value)


def test_another_instance_sees_nothing_of_a_model(wml_api_service: WMLService, api: WMLClient) -> None:
    asset = api.publish_model(meta(), io.BytesIO(skops_bytes()))
    other = wml_api_service.add_user()
    theirs = client_for(wml_api_service, other)
    assert asset.id not in [m.id for m in theirs.list_model_assets()]
    assert asset.id not in [m.id for m in theirs.list_published_models()]
    raw = Raw(wml_api_service, other)
    assert raw("GET", f"/v3/ml_assets/models/{asset.id}").status_code == 404
    assert raw("GET", f"/v3/ml_assets/models/{asset.id}/content").status_code == 404
    assert raw("DELETE", f"/v3/ml_assets/models/{asset.id}").status_code == 404


def test_a_model_names_its_latest_content_as_model_version_where_the_v3_client_loads_it(raw: Raw) -> None:
    """`repository.load` of the v3 client reads `entity.model_version.content_url` of GET /v3/ml_assets/models/{id},
    then asks that version's size (`?size=true`) and downloads the content."""
    model_id, version_id = raw.new_model()
    content = pickled_tar_bytes()
    assert raw.upload(model_id, version_id, content).status_code == 200
    newer = raw("POST", f"/v3/ml_assets/models/{model_id}/versions").json()["metadata"]["guid"]  # no content yet
    entity = raw("GET", f"/v3/ml_assets/models/{model_id}").json()["entity"]
    assert entity["model_version"]["guid"] == version_id != newer
    assert "content_location" not in entity["model_version"]  # with it, the client would skip its upload
    loaded = requests.get(entity["model_version"]["content_url"], headers=raw.headers, timeout=60)
    assert loaded.content == content
    size = raw("GET", f"/v3/ml_assets/models/{model_id}/versions/{version_id}", params={"size": "true"}).json()
    assert int(size["contentSize"]) == len(content)


def test_one_upload_at_a_time_per_version(raw: Raw) -> None:
    import threading
    import time

    model_id, version_id = raw.new_model()
    content = skops_bytes()
    first: list[requests.Response] = []
    started = threading.Event()

    def slowly() -> Any:
        started.set()
        for i in range(0, len(content), max(1, len(content) // 10)):
            yield content[i:i + max(1, len(content) // 10)]
            time.sleep(0.2)

    thread = threading.Thread(target=lambda: first.append(raw.upload(model_id, version_id, slowly())))  # type: ignore[arg-type]
    thread.start()
    started.wait(10)
    time.sleep(0.5)
    second = raw.upload(model_id, version_id, content)
    thread.join(60)
    assert second.status_code == 409
    assert error_code(second) == "upload_in_progress"
    assert first[0].status_code == 200, first[0].text
    again = raw.upload(model_id, version_id, content)
    assert again.status_code == 409
    assert error_code(again) == "content_exists"
