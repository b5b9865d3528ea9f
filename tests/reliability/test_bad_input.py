"""Generated bad StreamingDeployments and Secrets sent through the real apiserver to a running operator.

Each case is either refused by the apiserver (the CRD's schema) with a message naming the field, or reaches
Stalled with the reason the reconciler gives it; none makes a WML call, the operator never crashes and a good
resource beside them stays Ready on the same deployment. Cases get Secrets of their own (names suffixed with
the case number) pointing at a WML endpoint of their own (a fault proxy that must see 0 requests).
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

from tests.badinput import DEAD, REASONS, SECRET, Case, mutated, reconciled_reason
from tests.conftest import Figures
from tests.e2e.conftest import StreamEnv, create_secrets, wait_for
from tests.reliability.checks import GROUP, PLURAL, VERSION, condition, list_sdeps
from tests.reliability.conftest import count
from wml_localplatform.faultproxy import FaultProxy
from wml_localplatform.wmloperator import WMLOperator
from wml_localplatform.wmlservice import WMLService

Kubectl = Callable[..., Any]
REFS = {("wml", "credentialsSecretRef"): "wml", ("sparkCredentialsSecretRef",): "spark",
        ("input", "connectionSecretRef"): "kafka", ("output", "connectionSecretRef"): "kafka"}


def _own_secrets(spec: dict[str, Any], secrets: dict[str, dict[str, str]], i: int,
                 wml_url: str) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """The case with its Secrets renamed to <name>-<i>, its refs following, and WML at wml_url."""
    spec = copy.deepcopy(spec)
    for path, name in REFS.items():
        node: Any = spec
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get("name") == name:
            node["name"] = f"{name}-{i}"
    renamed = {f"{name}-{i}": dict(data) for name, data in secrets.items()}
    if renamed.get(f"wml-{i}", {}).get("url") == DEAD:  # a generated url stays as generated
        renamed[f"wml-{i}"]["url"] = wml_url
    return spec, renamed


def test_generated_bad_specs_through_the_apiserver(fault_namespace: str, k8s_api: k8s.ApiClient, kubectl: Kubectl,
                                                   make_wml_service: Callable[..., WMLService],
                                                   fault_proxy: Callable[[WMLService], FaultProxy],
                                                   start_operator: Callable[..., WMLOperator],
                                                   figures: Figures) -> None:
    ns = fault_namespace
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false")
    good_proxy, bad_proxy = fault_proxy(service), fault_proxy(service)
    user = service.add_user()
    create_secrets(k8s_api, ns, good_proxy.url, user, None)
    operator = start_operator(ns)
    pid = operator.pid_file.read_text().split()[0]
    kubectl("apply", "-f", "-", input=StreamEnv(ns, "in", "out", user, service, None).manifest(  # type: ignore[arg-type]
        name="good"))
    kubectl("wait", "--for=condition=Ready", "--timeout=120s", "-n", ns, "sdep/good")
    good_id = next(o for o in list_sdeps(k8s_api, ns) if o["metadata"]["name"] == "good")["status"]["deploymentId"]

    core, custom = k8s.CoreV1Api(k8s_api), k8s.CustomObjectsApi(k8s_api)
    expected: dict[str, tuple[str, str]] = {}  # resource name -> (mutation kind, expected Stalled reason)
    refused: Counter[str] = Counter()
    refusals: list[str] = []
    skipped_valid = 0
    numbers = itertools.count()
    n = count(1000, 150)

    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(mutated())
    def send(case: Case) -> None:
        nonlocal skipped_valid
        spec, secrets, kind = case
        i = next(numbers)
        spec, secrets = _own_secrets(spec, secrets, i, bad_proxy.url)
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "StreamingDeployment",
                "metadata": {"name": f"bad-{i}", "namespace": ns}, "spec": spec}
        try:
            # What the apiserver would store: unknown fields are pruned, so a case may turn valid on the way.
            stored = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body, dry_run="All")
        except k8s.ApiException as exc:
            status, message = exc.status, json.loads(exc.body)["message"]
            assert status in (400, 422), (status, message[:500])
            assert "spec" in message, message  # names the offending field
            assert SECRET not in message
            refused[kind] += 1
            refusals.append(message)
            return
        # The oracle runs with WML at a dead port: a case it finds acceptable would otherwise reach bad_proxy.
        offline = {name: {k: DEAD if v == bad_proxy.url else v for k, v in data.items()}
                   for name, data in secrets.items()}
        reason, _ = reconciled_reason(stored["spec"], offline)
        if reason is None:
            skipped_valid += 1
        assume(reason is not None)  # acceptable input is not bad input: it would rightly call WML
        for name, data in secrets.items():
            core.create_namespaced_secret(ns, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name), string_data=data))
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        expected[f"bad-{i}"] = (kind, str(reason))

    started = time.monotonic()
    send()
    sent_s = time.monotonic() - started

    def outcomes() -> dict[str, str | None]:
        seen = {o["metadata"]["name"]: (condition(o, "Stalled") or {}).get("reason") for o in list_sdeps(k8s_api, ns)}
        return {name: seen.get(name) for name in expected}

    def unsettled() -> dict[str, tuple[str, str, str | None]]:
        got = outcomes()
        return {name: (kind, reason, got[name]) for name, (kind, reason) in expected.items() if got[name] != reason}

    wait_for(f"{len(expected)} bad resources Stalled with their reasons (kind, expected, got)",
             lambda: not (left := unsettled()) or print(list(left.items())[:10]), timeout=240, interval=5)
    settled_s = time.monotonic() - started

    assert bad_proxy.requests() == [], f"bad input reached WML: {bad_proxy.requests()[:5]}"
    assert operator.running(), "the operator crashed"
    assert operator.pid_file.read_text().split()[0] == pid, "the operator restarted"
    errors = [line for line in operator.text().splitlines() if '"severity": "error"' in line]
    assert errors == [], errors[:5]
    good = next(o for o in list_sdeps(k8s_api, ns) if o["metadata"]["name"] == "good")
    assert (condition(good, "Ready") or {}).get("status") == "True"
    assert good["status"]["deploymentId"] == good_id
    events = kubectl("get", "events", "-n", ns, "-o", "json").stdout
    assert SECRET not in events

    by_kind: dict[str, Counter[str]] = {}
    for kind, reason in expected.values():
        by_kind.setdefault(kind, Counter())[f"Stalled/{reason}"] += 1
    for kind, refusals_of_kind in refused.items():
        by_kind.setdefault(kind, Counter())["refused by the apiserver"] += refusals_of_kind
    for kind in sorted(by_kind):
        figures.add("bad_specs", where="apiserver + operator", mutation=kind, tried=sum(by_kind[kind].values()),
                    outcomes=dict(by_kind[kind].most_common()), wml_calls=0, operator_crashes=0)
    figures.add("bad_specs", where="apiserver + operator", mutation="(all)", tried=len(expected) + len(refusals),
                outcomes={"refused": len(refusals), "stalled": len(expected),
                          "valid, not sent": skipped_valid},
                wml_calls=len(bad_proxy.requests()), operator_crashes=0,
                seconds=f"{sent_s:.0f} to send, {settled_s:.0f} until all settled")
    assert set(reason for _, reason in expected.values()) <= REASONS
