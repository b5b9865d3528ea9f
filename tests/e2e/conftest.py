"""The whole chain: kube-apiserver + the operator (as a process, under deploy/'s RBAC) + the WML service +
Kafka. Each test gets its own namespace, topics and WML instance."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client as k8s

from wml_localplatform import KafkaInfo, KubeInfo
from wml_localplatform.wmloperator import Kubectl, WMLOperator, install_crd, install_rbac, service_account_kubeconfig
from wml_localplatform.wmlservice import WMLService, WMLUser

MODEL = "3b1f3d7e-5c1a-4d8e-9b7a-6f0e2c9d4a11"


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl) -> None:
    install_crd(kubectl)


@pytest.fixture(scope="session")
def operator_kubeconfig(kube: KubeInfo, kubectl: Kubectl, crd: None,
                        tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig holding a token of the operator's ServiceAccount: it gets only deploy/'s RBAC."""
    install_rbac(kubectl)
    return service_account_kubeconfig(kubectl, Path(kube.kubeconfig),
                                      tmp_path_factory.mktemp("operator") / "operator.kubeconfig")


OperatorProcess = WMLOperator  # the name the tests annotate the `operator` fixture with


@pytest.fixture(scope="session")
def operator(operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WMLOperator]:
    proc = WMLOperator(tmp_path_factory.mktemp("operator-run"), operator_kubeconfig,
                       env={"WML_OPERATOR_POLL_FAST_SECONDS": "1", "WML_OPERATOR_POLL_SLOW_SECONDS": "10",
                            "WML_OPERATOR_LOG_FORMAT": "json",
                            # a glob: every test namespace, and nothing else (see test_other_namespaces_are_left_alone)
                            "WML_OPERATOR_NAMESPACES": "wso-test-*"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@dataclass
class StreamEnv:
    namespace: str
    input_topic: str
    output_topic: str
    user: WMLUser
    service: WMLService
    kafka: KafkaInfo

    def manifest(self, name: str = "tweets", state: str = "RUNNING", **spec: object) -> str:
        body = {"apiVersion": "wmlstream.dev/v1alpha1", "kind": "StreamingDeployment",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"state": state, "modelId": MODEL, "wml": {"credentialsSecretRef": {"name": "wml"}},
                         "sparkCredentialsSecretRef": {"name": "spark", "key": "credentials.json"},
                         "input": {"topic": self.input_topic, "connectionSecretRef": {"name": "kafka"}},
                         "output": {"topic": self.output_topic, "connectionSecretRef": {"name": "kafka"}},
                         **spec}}
        return json.dumps(body)


def create_secrets(k8s_api: k8s.ApiClient, namespace: str, wml_url: str, user: WMLUser,
                   kafka: KafkaInfo | None) -> None:
    """The three Secrets a StreamingDeployment of StreamEnv.manifest() names: wml (its url may be a fault
    proxy's), kafka and spark. Without a broker, the kafka Secret names an unreachable one."""
    core = k8s.CoreV1Api(k8s_api)
    for name, data in secret_data(wml_url, user, kafka).items():
        core.create_namespaced_secret(namespace, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name),
                                                              string_data=data))


def secret_data(wml_url: str, user: WMLUser, kafka: KafkaInfo | None) -> dict[str, dict[str, str]]:
    """What create_secrets() writes, by Secret name (for tests that put the Secrets in a manifest)."""
    if kafka is not None:
        kafka_user = kafka.user("wml") if len(kafka.users) > 1 else kafka.users[0]
        kafka_data = {"kafka_brokers_sasl": json.dumps([kafka.bootstrap]), "user": kafka_user.name,
                      "password": kafka_user.password, "security_protocol": kafka.security_protocol}
    else:
        kafka_data = {"kafka_brokers_sasl": "127.0.0.1:9", "user": "u", "password": "p"}
    return {
        "wml": {"url": wml_url, "instance_id": user.instance_id, "username": user.username,
                "password": user.password},
        "kafka": kafka_data,
        "spark": {"credentials.json": json.dumps({
            "tenant_id": "t1", "tenant_id_full": "t1-full", "cluster_master_url": "https://spark.invalid",
            "instance_id": str(uuid.uuid4()), "tenant_secret": "spark-" + uuid.uuid4().hex, "plan": "standard"})},
    }


def accept_only_env(namespace: str, k8s_api: k8s.ApiClient, make_wml_service: Callable[..., WMLService]
                    ) -> StreamEnv:
    """A WML service that accepts deployments without running them (no Kafka), a user of its own, and the
    Secrets of StreamEnv.manifest() in `namespace`: for tests of the operator's side alone."""
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false")
    user = service.add_user()
    create_secrets(k8s_api, namespace, service.url, user, None)
    return StreamEnv(namespace, "in", "out", user, service, None)  # type: ignore[arg-type]


@pytest.fixture
def stream_env(namespace: str, k8s_api: k8s.ApiClient, kafka: KafkaInfo, kafka_topic: Callable[..., str],
               wml_service: WMLService) -> StreamEnv:
    user = wml_service.add_user()
    create_secrets(k8s_api, namespace, wml_service.url, user, kafka)
    return StreamEnv(namespace, kafka_topic("tweets"), kafka_topic("sentiment"), user, wml_service, kafka)


AUDIT_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def audit_trail(env: StreamEnv, k8s_api: k8s.ApiClient) -> list[dict[str, str]]:
    """The WML service's audit lines about env's instance (the service is shared; the instance is the test's),
    each with its time, user and client; none holds a password or secret of the namespace's Secrets, or a token
    (every JWT starts with eyJ)."""
    core = k8s.CoreV1Api(k8s_api)
    data = {name: {k: base64.b64decode(v).decode() for k, v in (core.read_namespaced_secret(
        name, env.namespace).data or {}).items()} for name in ("wml", "kafka", "spark")}
    secrets = {data["wml"]["password"], data["kafka"]["password"],
               json.loads(data["spark"]["credentials.json"])["tenant_secret"]}
    records = [r for r in env.service.audit_records() if r.get("instance") == env.user.instance_id]
    text = json.dumps(records)
    assert not [s[:3] for s in secrets if s in text], "a secret of the namespace is in the audit trail"
    assert "eyJ" not in text, "a token is in the audit trail"
    for record in records:
        assert AUDIT_TIME.match(record["time"]), record
        assert record["user"], record
        assert record["client"] == ("cli" if record["event"].startswith("user.") else "127.0.0.1"), record
    return records


def wait_for(what: str, check: Callable[[], object], timeout: float = 90.0, interval: float = 0.5) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
