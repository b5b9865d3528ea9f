"""The Dockerfile's two images, built here without a Docker engine (hack/build-images.sh: buildah, a base from
Debian's packages) and run with podman as deploy/ runs them: uid 10001, read-only root filesystem, no capabilities.
The service image serves the API and runs a stream on the real broker; the operator image, under deploy/'s RBAC,
reconciles a StreamingDeployment to Ready against the real kube-apiserver, and deletes it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import skops.io
from kubernetes import client as k8s
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tests.conftest import fresh_namespace
from tests.e2e.conftest import StreamEnv, create_secrets, wait_for
from tests.e2e.test_lifecycle import Output, produce, sdep
from tests.integration.test_wml_service_user_models import LABELS, TEXTS, client, deploy, publish, read, schema, send
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_localplatform import KafkaInfo
from wml_localplatform.containers import ContainerOperator, ContainerWMLService, ensure_images, exec_in

pytestmark = pytest.mark.e2e
PREFIX = "wso-image"  # this module's operator only: the session's operator process serves wso-test-*


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> None:
    ensure_images(tmp_path_factory.mktemp("images") / "build-images.log")


@pytest.fixture(scope="module")
def service_container(images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerWMLService]:
    service = ContainerWMLService(tmp_path_factory.mktemp("wml-image"),
                                  env={"WML_SERVER_KAFKA_UNREACHABLE_TIMEOUT": "15"})
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def operator_container(images: None, operator_kubeconfig: Path,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerOperator]:
    operator = ContainerOperator(tmp_path_factory.mktemp("operator-image"), operator_kubeconfig,
                                 env={"WML_OPERATOR_NAMESPACES": f"{PREFIX}-*", "WML_OPERATOR_LOG_FORMAT": "json",
                                      "WML_OPERATOR_POLL_FAST_SECONDS": "1"})
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


@pytest.fixture
def image_env(k8s_api: k8s.ApiClient, dumps: Path, kafka: KafkaInfo, kafka_topic: Callable[..., str],
              service_container: ContainerWMLService) -> Iterator[StreamEnv]:
    for namespace in fresh_namespace(k8s_api, dumps, prefix=PREFIX):
        user = service_container.add_user()
        create_secrets(k8s_api, namespace, service_container.url, user, kafka)
        yield StreamEnv(namespace, kafka_topic("tweets"), kafka_topic("sentiment"), user, service_container, kafka)


@pytest.mark.parametrize("which", ["service", "operator"])
def test_each_image_runs_as_deploy_runs_it(which: str, service_container: ContainerWMLService,
                                          operator_container: ContainerOperator) -> None:
    name = service_container.name if which == "service" else operator_container.name
    ids = exec_in(name, ["python", "-c", "import os; print(os.getuid(), os.getgid())"])
    assert ids.stdout.split() == ["10001", "10001"], ids.stderr
    caps = exec_in(name, ["python", "-c", "print(next(line for line in open('/proc/self/status') "
                                          "if line.startswith('CapEff')).split()[1])"])
    assert int(caps.stdout.strip(), 16) == 0, caps.stderr
    write = exec_in(name, ["python", "-c", "open('/opt/venv/written-at-run-time', 'w')"])
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr


def test_the_operator_image_reconciles_a_stream_of_the_service_image(
        image_env: StreamEnv, operator_container: ContainerOperator, kubectl: Callable[..., Any],
        k8s_api: k8s.ApiClient) -> None:
    env, ns = image_env, image_env.namespace
    kubectl("apply", "-f", "-", input=env.manifest())
    waited = kubectl("wait", "--for=condition=Ready", "--timeout=180s", "-n", ns, "sdep/tweets", check=False)
    assert waited.returncode == 0, f"{waited.stderr}\n{operator_container.text()[-3000:]}"
    status = sdep(k8s_api, ns, "tweets")["status"]
    assert status["wmlStatus"] == "RUNNING"
    output = Output(env)
    try:
        keys = [f"img-{i}" for i in range(20)]
        produce(env, keys)
        wait_for("20 predictions from the service image", lambda: output.drain() >= 20 and set(keys) <= set(
            output.by_key), timeout=120)
        assert all(output.by_key[key] == 1 for key in keys), output.by_key
        assert {r["prediction"] for r in output.records} <= {"POSITIVE", "NEGATIVE"}
    finally:
        output.close()
    kubectl("delete", "sdep", "tweets", "-n", ns, "--timeout=120s")
    wml = WMLClient(env.service.url, WMLCredentials(env.user.username, env.user.password), env.user.instance_id)
    assert wml.list_instance_deployments() == []


def test_the_service_image_scores_a_users_model_in_its_sandbox(service_container: ContainerWMLService,
                                                                kafka: KafkaInfo,
                                                                kafka_topic: Callable[..., str]) -> None:
    """An uploaded model is untrusted code: its load check and its scoring run in the sandboxed worker, which
    must work inside the container too (no capabilities, read-only root, /tmp a tmpfs)."""
    api = client(service_container)
    pipeline = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())]).fit(TEXTS, LABELS)
    model_id = publish(api, skops.io.dumps(pipeline), schema(tweet="string"))
    source, target = kafka_topic("in"), kafka_topic("out")
    did = deploy(api, kafka, model_id, source, target)
    send(kafka, source, {"good": {"tweet": "what a great day"}, "bad": {"tweet": "awful, I hate it"}})
    out = read(kafka, target, 2)
    expected = pipeline.predict(["what a great day", "awful, I hate it"])
    assert [out["good"]["prediction"], out["bad"]["prediction"]] == list(expected)
    api.delete_instance_deployment(did)
    assert "sandbox: landlock" in service_container.log.read_text()  # not a worker that ran unconfined
