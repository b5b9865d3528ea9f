"""The fault suite: faults injected into the real chain (operator process, kube-apiserver + etcd, WML service,
Kafka), each checked while it lasts and after recovery.

Counts: `make test` runs every case with reduced counts; `make reliability` sets WSO_RELIABILITY=full for the
counts the issue asks for and renders docs/RELIABILITY.md from what the cases record with `figures.add()`.

Each case gets a namespace named wso-fault-* and an operator process of its own that watches only that
namespace, so the session's e2e operator (wso-test-*) never acts on it and a case may kill its operator.
The operator reaches the WML service through a FaultProxy (localplatform/wml_localplatform/faultproxy.py) named by the
`url` of the credentials Secret.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.conftest import fresh_namespace
from tests.e2e.conftest import crd, operator_kubeconfig  # noqa: F401 - fixtures shared with the e2e suite
from tests.reliability.checks import GROUP, PLURAL, VERSION, list_sdeps
from wml_localplatform.faultproxy import FaultProxy
from wml_localplatform.wmloperator import WMLOperator
from wml_localplatform.wmlservice import WMLService

FULL = os.environ.get("WSO_RELIABILITY") == "full"


def count(full: int, reduced: int) -> int:
    """How many times to repeat something: `full` under `make reliability`, `reduced` in `make test`."""
    return full if FULL else reduced


@pytest.fixture
def fault_namespace(k8s_api: k8s.ApiClient, dumps: Path, crd: None) -> Iterator[str]:  # noqa: F811
    yield from fresh_namespace(k8s_api, dumps, prefix="wso-fault")


OPERATOR_ENV = {"WML_OPERATOR_POLL_FAST_SECONDS": "1", "WML_OPERATOR_POLL_SLOW_SECONDS": "5",
                "WML_OPERATOR_LOG_FORMAT": "json", "WML_OPERATOR_WML_TIMEOUT_SECONDS": "3"}


@pytest.fixture
def start_operator(operator_kubeconfig: Path, tmp_path: Path,  # noqa: F811
                   k8s_api: k8s.ApiClient) -> Iterator[Callable[..., WMLOperator]]:
    """Starts an operator process that watches the given namespaces only (defaults in OPERATOR_ENV, which
    keyword arguments override); each is stopped after the test. Killed ones can be start()ed again.
    Before stopping them, the test's StreamingDeployments are deleted while an operator still runs, so no
    finalizer is left behind to hold the namespace in Terminating."""
    started: list[tuple[WMLOperator, tuple[str, ...]]] = []

    def start(*namespaces: str, **env: str) -> WMLOperator:
        op = WMLOperator(tmp_path / f"operator-{len(started)}", operator_kubeconfig,
                         env={**OPERATOR_ENV, "WML_OPERATOR_NAMESPACES": ",".join(namespaces), **env})
        op.start()
        started.append((op, namespaces))
        return op

    yield start
    live = [(op, nss) for op, nss in started if op.running()]
    for ns in {ns for _, nss in live for ns in nss}:
        _delete_all_and_wait(k8s_api, ns)
    for op, _ in started:
        op.stop()


def _delete_all_and_wait(k8s_api: k8s.ApiClient, namespace: str, timeout: float = 60.0) -> None:
    api = k8s.CustomObjectsApi(k8s_api)
    try:
        api.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    except k8s.ApiException:
        return  # the apiserver is not answering: nothing more to tidy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and list_sdeps(k8s_api, namespace):
        time.sleep(0.5)


@pytest.fixture
def fault_proxy(tmp_path: Path) -> Iterator[Callable[[WMLService], FaultProxy]]:
    """Puts a FaultProxy in front of a service; its response log lands where the secret scanner reads."""
    proxies: list[FaultProxy] = []

    def make(service: WMLService) -> FaultProxy:
        proxy = FaultProxy(service.url, tmp_path / f"proxy-{len(proxies)}-responses.log").start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()
