"""Generated bad PublishedModels, their Secrets and ConfigMaps, sent through the real apiserver to a running
operator (the strategy of tests/unit/test_published_model_run.py, which runs the same cases through the pass
with fakes).

Each case is either refused by the apiserver (the CRD's schema, its CEL rule) with a message naming the field,
or reaches Stalled with the reason the pass gives it with fakes; none makes a WML call (each case's WML Secret
points at a fault proxy that must see 0 requests), none shows the Secret's value, and the operator never
crashes or restarts.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from kubernetes import client as k8s

from tests.conftest import Figures
from tests.e2e.conftest import wait_for
from tests.reliability.conftest import count
from tests.unit.test_published_model_run import REASONS, SECRET, Calls, FakeKube, bad_case, body, publisher
from wml_localplatform.faultproxy import FaultProxy
from wml_localplatform.wmloperator import WMLOperator
from wml_localplatform.wmlservice import WMLService
from wml_operator.published.spec import PLURAL
from wml_operator.spec import GROUP, VERSION

Kubectl = Callable[..., Any]
Case = tuple[dict[str, Any], dict[str, dict[str, str]], FakeKube]


def expected_reason(spec: dict[str, Any], secrets: dict[str, dict[str, str]], kube: FakeKube) -> str | None:
    """The pass with fakes: its Stalled reason, or None when the case is acceptable (it then called WML)."""
    outcome = publisher(secrets, kube, Calls()).run(body(spec))
    stalled = next((c for c in outcome.status["conditions"] if c["type"] == "Stalled"), None)
    return str(stalled["reason"]) if stalled else None


def own_names(spec: dict[str, Any], i: int) -> dict[str, Any]:
    """The case's Secret and ConfigMap renamed to <name>-<i>, so cases do not share them."""
    spec = copy.deepcopy(spec)
    for path, name in ((("wml", "credentialsSecretRef"), "wml"), (("source", "configMapRef"), "cm")):
        node: Any = spec
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get("name") == name:
            node["name"] = f"{name}-{i}"
    return spec


def test_generated_bad_published_models_through_the_apiserver(
        fault_namespace: str, k8s_api: k8s.ApiClient, make_wml_service: Callable[..., WMLService],
        fault_proxy: Callable[[WMLService], FaultProxy], start_operator: Callable[..., WMLOperator],
        kubectl: Kubectl, figures: Figures) -> None:
    ns = fault_namespace
    proxy = fault_proxy(make_wml_service(WML_SERVER_RUN_STREAMS="false"))
    operator = start_operator(ns)
    pid = operator.pid_file.read_text().split()[0]
    core, custom = k8s.CoreV1Api(k8s_api), k8s.CustomObjectsApi(k8s_api)
    expected: dict[str, str] = {}  # resource name -> the Stalled reason the pass with fakes gives it
    refused: Counter[str] = Counter()
    skipped_valid = 0
    numbers = itertools.count()

    @settings(max_examples=count(300, 40), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(bad_case())
    def send(case: Case) -> None:
        nonlocal skipped_valid
        spec, secrets, kube = case
        i = next(numbers)
        try:
            stored = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "PublishedModel",
                "metadata": {"name": f"bad-{i}", "namespace": ns}, "spec": spec}, dry_run="All")
        except k8s.ApiException as exc:
            status, message = exc.status, json.loads(exc.body)["message"]
            assert status in (400, 422), (status, message[:500])
            assert "spec" in message, message
            assert SECRET not in message
            refused["refused by the apiserver"] += 1
            return
        reason = expected_reason(stored["spec"], secrets, kube)
        if reason is None:
            skipped_valid += 1
        assume(reason is not None)  # acceptable input is not bad input: it would rightly call WML
        for name, data in secrets.items():
            if name == "wml" and "url" in data:
                data = {**data, "url": proxy.url}  # any WML call this case makes shows there
            core.create_namespaced_secret(ns, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=f"{name}-{i}"),
                                                           string_data=data))
        for name, config_map in kube.config_maps.items():  # binaryData as the API takes it: base64 already
            core.create_namespaced_config_map(ns, k8s.V1ConfigMap(
                metadata=k8s.V1ObjectMeta(name=f"{name}-{i}"), data=config_map.get("data"),
                binary_data=config_map.get("binaryData")))
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "PublishedModel",
            "metadata": {"name": f"bad-{i}", "namespace": ns}, "spec": own_names(stored["spec"], i)})
        expected[f"bad-{i}"] = str(reason)

    started = time.monotonic()
    send()

    def unsettled() -> dict[str, tuple[str, str | None]]:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        got = {o["metadata"]["name"]: next((c["reason"] for c in (o.get("status") or {}).get("conditions", [])
                                            if c["type"] == "Stalled" and c["status"] == "True"), None)
               for o in items}
        return {name: (want, got.get(name)) for name, want in expected.items() if got.get(name) != want}

    wait_for(f"{len(expected)} bad PublishedModels Stalled with their reasons (expected, got)",
             lambda: not (left := unsettled()) or print(list(left.items())[:10]), timeout=180, interval=5)
    assert proxy.requests() == [], f"bad input reached WML: {proxy.requests()[:5]}"
    assert operator.running(), "the operator crashed"
    assert operator.pid_file.read_text().split()[0] == pid, "the operator restarted"
    errors = [line for line in operator.text().splitlines() if '"severity": "error"' in line]
    assert errors == [], errors[:5]
    assert SECRET not in kubectl("get", "events", "-n", ns, "-o", "json").stdout
    assert SECRET not in json.dumps(custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL))
    assert set(expected.values()) <= REASONS
    outcomes = Counter(f"Stalled/{want}" for want in expected.values()) + refused
    figures.add("bad_specs", where="apiserver + operator", mutation="PublishedModel (all)",
                tried=sum(outcomes.values()), outcomes={**dict(outcomes.most_common()),
                                                        "valid, not sent": skipped_valid},
                wml_calls=len(proxy.requests()), operator_crashes=0,
                seconds=f"{time.monotonic() - started:.0f} until all settled")
