"""The local Kubernetes API server is real: storage, CRDs with status and printer columns, RBAC."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from wml_localplatform import KubeInfo

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.platformtest.wmlstream.dev"},
    "spec": {
        "group": "platformtest.wmlstream.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wdg"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "additionalPrinterColumns": [
                {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ],
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}}},
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
            }}},
        }],
    },
}


def test_namespace_and_secret_round_trip(k8s_api: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(k8s_api)
    assert core.read_namespace(namespace).status.phase == "Active"
    core.create_namespaced_secret(namespace, k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name="creds"), string_data={"password": "s3cr3t-value"}))
    stored = core.read_namespaced_secret("creds", namespace)
    assert base64.b64decode(stored.data["password"]) == b"s3cr3t-value"


def _wait_established(api: k8s.ApiextensionsV1Api, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conditions = api.read_custom_resource_definition(name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise AssertionError(f"CRD {name} not Established after {timeout} s")


def test_crd_with_status_subresource_and_printer_columns(k8s_api: k8s.ApiClient, kubectl: Kubectl,
                                                         namespace: str) -> None:
    kubectl("apply", "-f", "-", input=json.dumps(CRD))
    _wait_established(k8s.ApiextensionsV1Api(k8s_api), CRD["metadata"]["name"])
    widget = {"apiVersion": "platformtest.wmlstream.dev/v1", "kind": "Widget",
              "metadata": {"name": "w1", "namespace": namespace}, "spec": {"size": 3}}
    # Right after Established the first writes can meet "storage is (re)initializing": retry briefly.
    for _attempt in range(50):
        result = kubectl("apply", "-f", "-", input=json.dumps(widget), check=False)
        if result.returncode == 0:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(result.stderr)

    custom = k8s.CustomObjectsApi(k8s_api)
    # The status subresource: a write to the main resource ignores status, one to /status sets it.
    custom.patch_namespaced_custom_object("platformtest.wmlstream.dev", "v1", namespace, "widgets", "w1",
                                          {"status": {"phase": "Ignored"}})
    assert "status" not in custom.get_namespaced_custom_object(
        "platformtest.wmlstream.dev", "v1", namespace, "widgets", "w1")
    custom.patch_namespaced_custom_object_status("platformtest.wmlstream.dev", "v1", namespace, "widgets", "w1",
                                                 {"status": {"phase": "Grown"}})

    out = kubectl("get", "wdg", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "SIZE", "PHASE", "AGE"]
    assert out[1].split()[:3] == ["w1", "3", "Grown"]

    invalid = {**widget, "metadata": {"name": "w2", "namespace": namespace}, "spec": {"size": 0}}
    refused = kubectl("apply", "-f", "-", input=json.dumps(invalid), check=False)
    assert refused.returncode != 0
    assert "spec.size" in refused.stderr


def test_rbac_refuses_a_service_account_without_rights(k8s_api: k8s.ApiClient, kube: KubeInfo, kubectl: Kubectl,
                                                        namespace: str) -> None:
    core = k8s.CoreV1Api(k8s_api)
    core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(
        metadata=k8s.V1ObjectMeta(name="nobody")))
    token = kubectl("create", "token", "nobody", "-n", namespace, "--duration=10m").stdout.strip()
    assert token.count(".") == 2  # a signed JWT

    config = k8s.Configuration()
    config.host = k8s_api.configuration.host
    config.ssl_ca_cert = k8s_api.configuration.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {token}"}
    as_nobody = k8s.CoreV1Api(k8s.ApiClient(config))
    with pytest.raises(ApiException) as refused:
        as_nobody.list_namespaced_secret(namespace)
    assert refused.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in refused.value.body

    # The same token is accepted once RBAC grants the right: the 403 above was authorization, not authn.
    rbac = k8s.RbacAuthorizationV1Api(k8s_api)
    rbac.create_namespaced_role(namespace, k8s.V1Role(
        metadata=k8s.V1ObjectMeta(name="read-secrets"),
        rules=[k8s.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])]))
    rbac.create_namespaced_role_binding(namespace, k8s.V1RoleBinding(
        metadata=k8s.V1ObjectMeta(name="nobody-reads"),
        role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="read-secrets"),
        subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="nobody", namespace=namespace)]))
    deadline = time.monotonic() + 10
    while True:
        try:
            as_nobody.list_namespaced_secret(namespace)
            break
        except ApiException as exc:
            if exc.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_deleting_a_namespace_removes_it_and_its_contents(k8s_api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(k8s_api)
    name = "wso-test-ns-delete"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(name, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="c"), data={"a": "b"}))
    core.delete_namespace(name)
    deadline = time.monotonic() + 60
    while name in {ns.metadata.name for ns in core.list_namespace().items}:
        if time.monotonic() > deadline:
            raise AssertionError("namespace still exists 60 s after deletion: is the namespace controller running?")
        time.sleep(0.5)
    assert not [cm for cm in core.list_config_map_for_all_namespaces().items if cm.metadata.namespace == name]
