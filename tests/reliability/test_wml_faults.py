"""Faults of the WML service as the operator sees them, injected by the fault proxy: down, 5xx, slow, 429,
token expiry and revoked credentials; and drift made behind the operator's back, many at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from localplatform.faultproxy import FaultProxy
from localplatform.wmloperator import WMLOperator
from localplatform.wmlservice import WMLService
from tests.conftest import Figures
from tests.e2e.conftest import StreamEnv, create_secrets, wait_for
from tests.reliability.checks import condition, list_sdeps, wait_converged, wml_client

Kubectl = Callable[..., Any]


def test_wml_down_then_back(fault_namespace: str, k8s_api: k8s.ApiClient, kubectl: Kubectl,
                            make_wml_service: Callable[..., WMLService],
                            fault_proxy: Callable[[WMLService], FaultProxy],
                            start_operator: Callable[..., WMLOperator], figures: Figures) -> None:
    ns = fault_namespace
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false")
    proxy = fault_proxy(service)
    user = service.add_user()
    create_secrets(k8s_api, ns, proxy.url, user, None)
    env = StreamEnv(ns, "in", "out", user, service, None)  # type: ignore[arg-type]
    start_operator(ns)
    for i in range(3):
        kubectl("apply", "-f", "-", input=env.manifest(name=f"s{i}"))
    state, _ = wait_converged(k8s_api, ns, service, user, timeout=60)
    assert state.ok, state

    proxy.down()
    kubectl("patch", "sdep", "s0", "-n", ns, "--type=merge", "-p", '{"spec": {"state": "STOPPED"}}')
    shown = wait_for("Reconciling WMLUnavailable while WML is down", lambda: (
        (c := condition(next(o for o in list_sdeps(k8s_api, ns) if o["metadata"]["name"] == "s0"), "Reconciling"))
        and c["reason"] == "WMLUnavailable" and c), timeout=60)
    assert isinstance(shown, dict)
    time.sleep(5)
    back = time.monotonic()
    proxy.up()
    state, seconds = wait_converged(k8s_api, ns, service, user, timeout=120)
    assert state.ok, state
    figures.add("faults", fault="WML service down 5 s+", injected=1, recovered=int(state.ok),
                shown=f"Reconciling/{shown['reason']}", recovery_s=round(time.monotonic() - back, 1),
                duplicates=state.duplicates, orphans=state.orphans)
    assert len(wml_client(service, user).list_instance_deployments()) == 3
    assert seconds >= 0
