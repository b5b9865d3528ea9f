"""The operator process, under deploy/'s RBAC, against the real kube-apiserver and the real service serving HTTPS on
127.0.0.1 with deploy/bootstrap-tls.sh's certificate: a StreamingDeployment without spec.wml goes Ready through
WML_OPERATOR_WML_CA_SECRET; a wrong CA in that Secret shows on the resource (Stalled WMLTLSError, a Warning event)
without any unverified call; the right one put back (a rotation) makes it Ready again, no restart: the Secret
watch wakes it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.conftest import fresh_namespace
from tests.integration.test_wml_tls_default_ca import MODEL, SPARK, make_pair
from wml_localplatform import KubeInfo
from wml_localplatform.wmloperator import WMLOperator, install_crd, install_rbac, service_account_kubeconfig
from wml_localplatform.wmlservice import WMLService

pytestmark = pytest.mark.integration
PREFIX = "wso-tlsca"  # the namespaces of this module's operator
GROUP, VERSION, PLURAL = "wmlstream.dev", "v1alpha1", "streamingdeployments"
Kubectl = Callable[..., Any]


@pytest.fixture
def world(kubectl: Kubectl, kube: KubeInfo, k8s_api: k8s.ApiClient, dumps: Path, tmp_path: Path,
          make_wml_service: Callable[..., WMLService]) -> Iterator[tuple[str, Path, WMLOperator]]:
    pair = make_pair(tmp_path / "pki")
    service = make_wml_service(ca_file=pair / "ca.crt", WML_SERVER_RUN_STREAMS="false",
                               WML_SERVER_TLS_CERT=str(pair / "tls.crt"), WML_SERVER_TLS_KEY=str(pair / "tls.key"))
    user = service.add_user()
    install_crd(kubectl)
    install_rbac(kubectl)
    kubeconfig = service_account_kubeconfig(kubectl, Path(kube.kubeconfig), tmp_path / "operator.kubeconfig")
    core = k8s.CoreV1Api(k8s_api)
    for namespace in fresh_namespace(k8s_api, dumps, prefix=PREFIX):
        secrets = {
            "wml-credentials": {"username": user.username, "password": user.password},
            # As the bootstrap writes it; the operator reads only ca.crt of it.
            "wml-server-tls": {"tls.crt": (pair / "tls.crt").read_text(), "tls.key": (pair / "tls.key").read_text(),
                               "ca.crt": (pair / "ca.crt").read_text()},
            "kafka": {"kafka_brokers_sasl": "127.0.0.1:9", "user": "u", "password": "p",
                      "security_protocol": "SASL_PLAINTEXT"},
            "spark": {"credentials.json": json.dumps(SPARK)},
        }
        for name, data in secrets.items():
            core.create_namespaced_secret(namespace, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name),
                                                                  string_data=data))
        operator = WMLOperator(tmp_path / "operator", kubeconfig, env={
            "WML_OPERATOR_NAMESPACES": f"{PREFIX}-*", "WML_OPERATOR_LOG_FORMAT": "json",
            "WML_OPERATOR_POLL_FAST_SECONDS": "1", "WML_OPERATOR_POLL_SLOW_SECONDS": "5",
            "WML_OPERATOR_WML_URL": service.url, "WML_OPERATOR_WML_INSTANCE_ID": user.instance_id,
            "WML_OPERATOR_WML_CREDENTIALS_SECRET": f"{namespace}/wml-credentials",
            "WML_OPERATOR_WML_CA_SECRET": f"{namespace}/wml-server-tls"})
        operator.start()
        try:
            yield namespace, pair, operator
        finally:
            delete_and_wait(k8s_api, namespace)
            operator.stop()


def delete_and_wait(k8s_api: k8s.ApiClient, namespace: str) -> None:
    """The resource goes while the operator still runs (its finalizer), so the namespace can go after."""
    custom = k8s.CustomObjectsApi(k8s_api)
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "tweets")
    except k8s.ApiException as exc:
        if exc.status != 404:
            raise
    deadline = time.monotonic() + 60
    while custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
        assert time.monotonic() < deadline, "the resource was not deleted"
        time.sleep(0.5)


def condition_of(k8s_api: k8s.ApiClient, namespace: str, kind: str) -> dict[str, Any]:
    obj = k8s.CustomObjectsApi(k8s_api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "tweets")
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


def set_ca(core: k8s.CoreV1Api, namespace: str, ca: Path) -> None:
    core.patch_namespaced_secret("wml-server-tls", namespace, {"stringData": {"ca.crt": ca.read_text()}})


def wait_for(what: str, check: Callable[[], bool], operator: WMLOperator, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}; operator log:\n{operator.text()[-3000:]}"
        time.sleep(0.5)


def test_the_operator_process_verifies_the_default_endpoint_and_follows_a_ca_rotation(
        world: tuple[str, Path, WMLOperator], k8s_api: k8s.ApiClient, tmp_path: Path) -> None:
    namespace, pair, operator = world
    core = k8s.CoreV1Api(k8s_api)
    k8s.CustomObjectsApi(k8s_api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "StreamingDeployment",
        "metadata": {"name": "tweets", "namespace": namespace},
        "spec": {"state": "RUNNING", "modelId": MODEL,  # no spec.wml: the operator's default endpoint
                 "sparkCredentialsSecretRef": {"name": "spark", "key": "credentials.json"},
                 "input": {"topic": "in", "connectionSecretRef": {"name": "kafka"}},
                 "output": {"topic": "out", "connectionSecretRef": {"name": "kafka"}}}})
    wait_for("Ready", lambda: condition_of(k8s_api, namespace, "Ready").get("status") == "True", operator)

    # A CA that did not sign the served certificate: the Secret's change wakes the resource, which says so.
    other = make_pair(tmp_path / "other")
    set_ca(core, namespace, other / "ca.crt")
    wait_for("Stalled WMLTLSError", lambda: condition_of(k8s_api, namespace, "Stalled").get("reason") == "WMLTLSError",
             operator)
    stalled = condition_of(k8s_api, namespace, "Stalled")
    assert stalled["status"] == "True"
    assert "unable to get local issuer certificate" in stalled["message"]
    events = core.list_namespaced_event(namespace).items
    assert any(e.type == "Warning" and e.reason == "WMLTLSError" for e in events), [(e.reason, e.message)
                                                                                   for e in events]
    assert condition_of(k8s_api, namespace, "Ready").get("status") != "True"

    # The right CA again (a rotation back): Ready, with the same operator process.
    pid = operator.pid_file.read_text().split()[0]
    set_ca(core, namespace, pair / "ca.crt")
    wait_for("Ready again", lambda: condition_of(k8s_api, namespace, "Ready").get("status") == "True", operator)
    assert operator.pid_file.read_text().split()[0] == pid
    assert "tls.key" not in operator.text()  # the key of the Secret it read is never logged
    assert pair.joinpath("tls.key").read_text().splitlines()[1] not in operator.text()
