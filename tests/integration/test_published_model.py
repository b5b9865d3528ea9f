"""PublishedModel end to end: the operator (a process, under deploy/'s RBAC: the ServiceAccount's kubeconfig) on
the real kube-apiserver, the real WML service behind a FaultProxy that records every request, and a local HTTP
server on 127.0.0.1 serving the model files."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import skops.io
from kubernetes import client as k8s
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tests.conftest import fresh_namespace
from tests.integration.test_wml_service_api import client_for
from wml_api import errors as E
from wml_api.client import WMLClient
from wml_api.repository import Framework, ModelAssetCreate
from wml_localplatform import KubeInfo
from wml_localplatform.faultproxy import FaultProxy
from wml_localplatform.wmloperator import (
    OPERATOR_NAMESPACE,
    WMLOperator,
    install_crd,
    install_rbac,
    service_account_kubeconfig,
)
from wml_localplatform.wmlservice import WMLService, WMLUser
from wml_operator.login_copies import PREFIX as COPY_PREFIX

pytestmark = pytest.mark.integration
PREFIX = "wso-pmodel"  # the namespaces of this module's operator
REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "wmlstream.dev", "v1alpha1", "publishedmodels"
Kubectl = Callable[..., Any]


def model_bytes(c: float) -> bytes:
    texts = ["I love it", "great day", "so happy", "awful", "I hate this", "terrible news"] * 3
    labels = (["POSITIVE"] * 3 + ["NEGATIVE"] * 3) * 3
    return skops.io.dumps(Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression(C=c))]).fit(texts,
                                                                                                         labels))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Files:
    """A local HTTP server: path -> bytes, with an ETag; counts GETs."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.gets: list[tuple[str, int]] = []
        files = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                data = files.files.get(self.path)
                if data is None:
                    files.gets.append((self.path, 404))
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = f'"{sha(data)[:16]}"'
                if self.headers.get("If-None-Match") == etag:
                    files.gets.append((self.path, 304))
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                files.gets.append((self.path, 200))
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def files() -> Iterator[Files]:
    served = Files()
    yield served
    served.close()


@pytest.fixture(scope="module")
def proxy(wml_api_service: WMLService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(wml_api_service.url, tmp_path_factory.mktemp("pm-proxy") / "responses.log").start()
    yield fault_proxy
    fault_proxy.down()


@pytest.fixture(scope="module")
def model_operator(kube: KubeInfo, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WMLOperator]:
    """The operator under the ServiceAccount's RBAC from deploy/ (configmaps: get only)."""
    install_crd(kubectl)  # both kinds
    install_rbac(kubectl)
    kubeconfig = service_account_kubeconfig(kubectl, Path(kube.kubeconfig),
                                            tmp_path_factory.mktemp("pm-operator") / "operator.kubeconfig")
    proc = WMLOperator(tmp_path_factory.mktemp("pm-operator-run"), kubeconfig,
                       env={"WML_OPERATOR_NAMESPACES": f"{PREFIX}-*", "WML_OPERATOR_LOG_FORMAT": "json"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


class Env:
    def __init__(self, k8s_api: k8s.ApiClient, namespace: str, user: WMLUser, wml: WMLClient, proxy: FaultProxy,
                 files: Files, operator: WMLOperator) -> None:
        self.custom = k8s.CustomObjectsApi(k8s_api)
        self.core = k8s.CoreV1Api(k8s_api)
        self.namespace, self.user, self.wml, self.proxy, self.files, self.operator = \
            namespace, user, wml, proxy, files, operator

    def apply(self, name: str, source: dict[str, Any], **spec: Any) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PublishedModel",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"framework": {"name": "scikit-learn"}, "source": source,
                         "wml": {"credentialsSecretRef": {"name": "wml"}}, **spec}}
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        except k8s.ApiException as exc:
            if exc.status != 409:
                raise
            self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name,
                                                       {"spec": body["spec"]})

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name))
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def wait(self, name: str, reason: str, timeout: float = 90.0, digest: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            body = self.get(name) or {}
            status = body.get("status") or {}
            conds = {c["type"]: c for c in status.get("conditions") or []}
            last = {k: (c["status"], c["reason"], c["message"]) for k, c in conds.items()}
            if status.get("observedGeneration") == body["metadata"]["generation"] and any(
                    c["reason"] == reason and c["status"] == "True" for c in conds.values()) and (
                    digest is None or status.get("digest") == digest):
                return body
            time.sleep(0.5)
        log = self.operator.log.read_text()[-4000:]
        raise AssertionError(f"{name}: no condition {reason} within {timeout:.0f} s (last: {last})\n{log}\n"
                             f"the operator's threads:\n{self.operator.stacks()[-6000:]}")

    def delete(self, name: str, timeout: float = 60.0) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        deadline = time.monotonic() + timeout
        while self.get(name) is not None:
            assert time.monotonic() < deadline, f"{name} was not deleted: {self.get(name)}"
            time.sleep(0.5)

    def writes(self, since: float) -> list[str]:
        return [f"{s.method} {s.path}" for s in self.proxy.requests(since) if s.method != "GET"
                and "/identity/token" not in s.path and "/v3/identity" not in s.path]

    def model_ids(self) -> set[str]:
        return {m.id for m in self.wml.list_model_assets()}


@pytest.fixture
def namespace(k8s_api: k8s.ApiClient, dumps: Path) -> Iterator[str]:
    """Namespaces of this module's operator only: the e2e suite's operator (session-wide, on wso-test-*) would
    otherwise reconcile the same PublishedModels beside it, two passes publishing one model twice."""
    yield from fresh_namespace(k8s_api, dumps, prefix=PREFIX)


@pytest.fixture
def env(k8s_api: k8s.ApiClient, namespace: str, wml_api_service: WMLService, proxy: FaultProxy, files: Files,
        model_operator: WMLOperator) -> Env:
    user = wml_api_service.add_user()
    k8s.CoreV1Api(k8s_api).create_namespaced_secret(namespace, k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name="wml"), string_data={
            "url": proxy.url, "instance_id": user.instance_id, "username": user.username,
            "password": user.password}))
    return Env(k8s_api, namespace, user, client_for(wml_api_service, user), proxy, files, model_operator)


def test_url_with_sha256_publishes_then_versions_then_restarts_without_writes(env: Env) -> None:
    v1, v2 = model_bytes(1.0), model_bytes(0.5)
    path = f"/{uuid.uuid4().hex}/model.skops"
    env.files.files[path] = v1
    env.apply("tweets", {"url": {"url": env.files.url + path, "sha256": sha(v1)}})
    # The module's first pass meets a cold operator and the service's first sandboxed load check: on a loaded
    # CI machine that once took longer than 90 s (the failure prints the operator's threads, to say where).
    body = env.wait("tweets", "Published", timeout=240)
    status = body["status"]
    assert status["digest"] == sha(v1)
    assert status["digestShort"] == sha(v1)[:12]
    model_id, v1_id = status["modelId"], status["versionId"]
    assert f"model {model_id} version {v1_id}" in status["message"]
    assert env.model_ids() == {model_id}
    assert env.wml.get_model_version(model_id, v1_id).entity.content_sha256 == sha(v1)

    # New content, new sha256: a new version of the same model.
    env.files.files[path] = v2
    env.apply("tweets", {"url": {"url": env.files.url + path, "sha256": sha(v2)}})
    status = env.wait("tweets", "Published", digest=sha(v2))["status"]
    assert status["modelId"] == model_id
    assert status["versionId"] != v1_id
    assert env.model_ids() == {model_id}
    assert env.wml.get_model_version(model_id, status["versionId"]).entity.content_sha256 == sha(v2)

    # Same spec, the operator restarted: no WML write, and the pinned content is not even downloaded.
    since, gets = time.monotonic(), len(env.files.gets)
    env.operator.stop()
    env.operator.start()
    time.sleep(8)  # the resume handler and a timer tick
    assert env.writes(since) == []
    assert env.files.gets[gets:] == []
    assert env.get("tweets")["status"]["versionId"] == status["versionId"]  # type: ignore[index]

    env.delete("tweets")  # deletionPolicy defaults to Delete
    assert model_id not in env.model_ids()


def test_a_version_uploaded_by_a_killed_pass_is_recorded_not_uploaded_again(env: Env) -> None:
    """A pass killed after its upload, before its status write: the next one finds the version in WML."""
    v1, v2 = model_bytes(1.0), model_bytes(0.3)
    path = f"/{uuid.uuid4().hex}/model.skops"
    env.files.files[path] = v1
    env.apply("killed", {"url": {"url": env.files.url + path, "sha256": sha(v1)}})
    model_id = env.wait("killed", "Published")["status"]["modelId"]
    uploaded = env.wml.add_model_version(model_id, io.BytesIO(v2))  # what the killed pass did
    env.files.files[path] = v2
    since = time.monotonic()
    env.apply("killed", {"url": {"url": env.files.url + path, "sha256": sha(v2)}})
    status = env.wait("killed", "Published", digest=sha(v2))["status"]
    assert status["versionId"] == uploaded.id
    assert env.writes(since) == []
    assert len(env.wml.list_model_versions(model_id)) == 2
    env.delete("killed")


def test_a_rotated_login_deletes_the_model_after_its_secret_is_pruned(env: Env, wml_api_service: WMLService,
                                                                       k8s_api: k8s.ApiClient) -> None:
    """The WML login is rotated (a new user of the instance, the old one removed); later the model and its
    Secret leave the repository together: the deletion goes through the copy of the new login."""
    v1 = model_bytes(1.0)
    path = f"/{uuid.uuid4().hex}/model.skops"
    env.files.files[path] = v1
    env.apply("rotated", {"url": {"url": env.files.url + path, "sha256": sha(v1)}})
    body = env.wait("rotated", "Published")
    model_id, uid = body["status"]["modelId"], body["metadata"]["uid"]
    core = k8s.CoreV1Api(k8s_api)
    new = wml_api_service.add_user(instance_id=env.user.instance_id)
    core.patch_namespaced_secret("wml", env.namespace, {"stringData": {
        "username": new.username, "password": new.password}})

    def copy_has_new_login() -> bool:
        copy = core.read_namespaced_secret(COPY_PREFIX + uid, OPERATOR_NAMESPACE)
        return any(new.username in base64.b64decode(v).decode() for v in (copy.data or {}).values())

    deadline = time.monotonic() + 30
    while not copy_has_new_login():
        assert time.monotonic() < deadline, "the copy of the login still holds the old one"
        time.sleep(0.5)
    wml_api_service.delete_user(env.user.username)
    core.delete_namespaced_secret("wml", env.namespace)
    env.delete("rotated")
    assert model_id not in {m.id for m in client_for(wml_api_service, new).list_model_assets()}


def test_digest_mismatch_stalls_and_publishes_nothing(env: Env) -> None:
    data = model_bytes(1.0)
    path = f"/{uuid.uuid4().hex}/model.skops"
    env.files.files[path] = data
    since = time.monotonic()
    env.apply("bad", {"url": {"url": env.files.url + path, "sha256": "0" * 64}})
    status = env.wait("bad", "DigestMismatch")["status"]
    assert "spec.source.url.sha256" in status["message"]
    assert env.writes(since) == []
    assert env.model_ids() == set()
    env.delete("bad")


def test_missing_url_is_source_not_found(env: Env) -> None:
    env.apply("missing", {"url": {"url": env.files.url + "/nothing-here"}})
    status = env.wait("missing", "SourceNotFound")["status"]
    assert "spec.source.url.url" in status["message"]
    assert env.model_ids() == set()
    env.delete("missing")


def test_config_map_source_under_the_operators_rbac(env: Env) -> None:
    data = model_bytes(2.0)
    env.apply("from-cm", {"configMapRef": {"name": "model", "key": "model.skops"}})
    env.wait("from-cm", "ConfigMapNotFound")
    env.core.create_namespaced_config_map(env.namespace, k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(name="model"), binary_data={"model.skops": base64.b64encode(data).decode()}))
    # A spec change (or the check interval) makes the operator look again.
    env.apply("from-cm", {"configMapRef": {"name": "model", "key": "model.skops"}}, checkIntervalSeconds=10)
    status = env.wait("from-cm", "Published")["status"]
    assert status["digest"] == sha(data)
    assert env.model_ids() == {status["modelId"]}
    env.delete("from-cm")
    assert env.model_ids() == set()


def test_adopted_model_is_ready_and_orphaned_on_delete(env: Env) -> None:
    data = model_bytes(3.0)
    asset = env.wml.publish_model(ModelAssetCreate(name="made elsewhere", framework=Framework(name="scikit-learn")),
                                  io.BytesIO(data))
    env.apply("adopted", {"modelId": asset.id})
    status = env.wait("adopted", "Adopted")["status"]
    assert status["modelId"] == asset.id
    assert status["digest"] == sha(data)
    env.apply("ghost", {"modelId": str(uuid.uuid4())})
    assert "does not exist" in env.wait("ghost", "ModelNotFound")["status"]["message"]
    env.delete("adopted")
    env.delete("ghost")
    assert env.model_ids() == {asset.id}  # Orphan, the default of an adopted model


def test_a_refused_new_version_leaves_no_pending_version(env: Env) -> None:
    """Nothing half-published: the client deletes the version whose upload was refused (a service extension)."""
    asset = env.wml.publish_model(ModelAssetCreate(name="m", framework=Framework(name="scikit-learn")),
                                  io.BytesIO(model_bytes(1.0)))
    with pytest.raises(E.BadRequest) as err:
        env.wml.add_model_version(asset.id, io.BytesIO(b"not a model"))
    assert err.value.code == "invalid_model_content"
    assert [v.entity.content_status.state for v in env.wml.list_model_versions(asset.id)] == ["persisted"]


@pytest.mark.parametrize(("case", "source", "extra"), [
    ("two sources", {"modelId": "m", "configMapRef": {"name": "c", "key": "k"}}, {}),
    ("no source", {}, {}),
    ("sha256 not hex", {"url": {"url": "http://x/m", "sha256": "xyz"}}, {}),
    ("not http", {"url": {"url": "file:///etc/passwd"}}, {}),
    ("unknown framework", {"modelId": "m"}, {"framework": {"name": "tensorflow"}}),
    ("interval too short", {"modelId": "m"}, {"checkIntervalSeconds": 1}),
    ("unknown field", {"modelId": "m"}, {"labelColum": "typo"}),
])
def test_the_apiserver_refuses_bad_specs(env: Env, case: str, source: dict[str, Any], extra: dict[str, Any]) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PublishedModel",
            "metadata": {"name": "refused", "namespace": env.namespace},
            "spec": {"framework": {"name": "scikit-learn"}, "source": source, **extra}}
    with pytest.raises(k8s.ApiException) as err:
        env.custom.create_namespaced_custom_object(GROUP, VERSION, env.namespace, PLURAL, body,
                                                   field_validation="Strict")
    assert err.value.status in (400, 422), case


def test_the_operator_prints_its_threads_on_sigusr1(model_operator: WMLOperator) -> None:
    """`kill -USR1`: where each thread is (a pass that seems stuck), and the operator goes on."""
    dump = model_operator.stacks()
    assert "most recent call first" in dump, dump
    assert 'File "' in dump
    assert "wml_operator/__main__.py" in dump  # the main thread: the event loop kopf runs on
    assert model_operator.running()
