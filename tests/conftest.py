"""Fixtures shared by every suite: the local platform (started once per session) and per-test isolation.

The platform is real: kube-apiserver + etcd (+ the namespace/GC controllers) and an Apache Kafka broker,
started from the cache that `make platform-build` fills. To run the suites against something already
running instead, set:
  KUBECONFIG                    an existing cluster (kind, a real one, or `make platform-up`'s)
  WSO_KAFKA_BOOTSTRAP           an existing broker, with WSO_KAFKA_USERNAME / WSO_KAFKA_PASSWORD and
                                optionally WSO_KAFKA_SECURITY_PROTOCOL (SASL_PLAINTEXT) and
                                WSO_KAFKA_SASL_MECHANISM (PLAIN)
A missing prerequisite is an error, never a skip: a suite that did not run did not pass.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from localplatform import KafkaBroker, KafkaInfo, KubeControlPlane, KubeInfo, PlatformConfig
from localplatform.wmlservice import WMLService, WMLUser

TESTS = Path(__file__).resolve().parent
SUITES = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The folder a test lives in is its suite: tests/unit -> @unit, and so on."""
    for item in items:
        parts = Path(str(item.path)).resolve().relative_to(TESTS).parts
        if parts and parts[0] in SUITES:
            item.add_marker(getattr(pytest.mark, parts[0]))


SCANNED_SECRETS: set[str] = set()


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole run: no log that the run produced (operator, WML service, Kafka, control plane, demo)
    holds a password the tests handed out. Torn down last, so it sees every log."""
    yield
    from localplatform import wmlservice

    secrets = SCANNED_SECRETS | set(wmlservice.ISSUED_PASSWORDS)
    leaks = []
    for path in tmp_path_factory.getbasetemp().rglob("*.log"):
        text = path.read_text(errors="replace")
        leaks += [f"{path}: {secret[:3]}..." for secret in secrets if secret and secret in text]
    assert not leaks, f"secrets found in logs: {leaks}"


@pytest.fixture(scope="session")
def platform_config() -> PlatformConfig:
    return PlatformConfig.load()


@pytest.fixture(scope="session")
def kube(platform_config: PlatformConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeInfo]:
    if kubeconfig := os.environ.get("KUBECONFIG"):
        api = k8s_config.new_client_from_config(config_file=kubeconfig)
        yield KubeInfo(kubeconfig=kubeconfig, server=api.configuration.host, version="external",
                       ready_seconds=0.0, apiserver_ready_seconds=0.0)
        return
    plane = KubeControlPlane(platform_config, tmp_path_factory.mktemp("kube"))
    try:
        yield plane.start()
    finally:
        plane.destroy()


@pytest.fixture(scope="session")
def kafka(platform_config: PlatformConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaInfo]:
    if external := KafkaInfo.from_env():
        yield external
        return
    broker = KafkaBroker(platform_config, tmp_path_factory.mktemp("kafka"))
    try:
        info = broker.start()
        SCANNED_SECRETS.update(u.password for u in info.users)
        yield info
    finally:
        broker.destroy()


@pytest.fixture(scope="session")
def k8s_api(kube: KubeInfo) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=kube.kubeconfig)


@pytest.fixture
def namespace(k8s_api: k8s.ApiClient) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (its contents go with it)."""
    name = f"wso-test-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(k8s_api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(
        name=name, labels={"app.kubernetes.io/part-of": "wml-stream-operator-tests"})))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def kubectl(kube: KubeInfo, platform_config: PlatformConfig) -> Kubectl:
    binary = platform_config.kubectl()

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(binary), f"--kubeconfig={kube.kubeconfig}", *args], input=input,
                                capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    return run


@pytest.fixture
def kafka_topic(kafka: KafkaInfo) -> Iterator[Callable[..., str]]:
    """Creates uniquely named topics for one test and deletes them afterwards."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(kafka.client_config(kafka.users[0].name))
    made: list[str] = []

    def create(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)
        made.append(name)
        return name

    yield create
    if made:
        for future in admin.delete_topics(made).values():
            future.result(30)


def _wml_service(directory: Path, **env: str) -> Iterator[WMLService]:
    service = WMLService(directory, env={"WML_SERVER_KAFKA_UNREACHABLE_TIMEOUT": "15", **env})
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def wml_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WMLService]:
    """One WML service process running real streams; tests isolate themselves with a user of a fresh instance."""
    yield from _wml_service(tmp_path_factory.mktemp("wml"))


@pytest.fixture(scope="session")
def wml_api_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WMLService]:
    """A WML service in accept-only mode (no Kafka clients): for tests of the API itself."""
    yield from _wml_service(tmp_path_factory.mktemp("wml-api"), WML_SERVER_RUN_STREAMS="false",
                            WML_SERVER_DEPLOYMENT_LIMIT="5")


@pytest.fixture
def make_wml_service(tmp_path: Path) -> Iterator[Callable[..., WMLService]]:
    """Starts services with given settings (environment variables) for one test; stops them after."""
    started: list[WMLService] = []

    def make(ca_file: Path | None = None, **env: str) -> WMLService:
        service = WMLService(tmp_path / f"wml-{len(started)}", env=env, ca_file=ca_file)
        service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


@pytest.fixture
def wml_user(wml_api_service: WMLService) -> WMLUser:
    """A user of the accept-only service, bound to an instance of its own."""
    return wml_api_service.add_user()
