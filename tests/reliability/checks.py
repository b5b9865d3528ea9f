"""What "converged" means after a fault, checked from both sides: the StreamingDeployments in the apiserver
and the deployments in the WML instance (read directly from the service, not through the fault proxy)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s

from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_api.models import Deployment
from wml_localplatform.wmlservice import WMLService, WMLUser

GROUP, VERSION, PLURAL = "wmlstream.dev", "v1alpha1", "streamingdeployments"


def wml_client(service: WMLService, user: WMLUser) -> WMLClient:
    return WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)


def list_sdeps(k8s_api: k8s.ApiClient, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = k8s.CustomObjectsApi(k8s_api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL)["items"]
    return items


def condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


@dataclass
class Convergence:
    """How far a namespace is from what its resources ask for; `ok` when nothing is off."""

    not_ready: list[str] = field(default_factory=list)  # resources without Ready=True for their generation
    wrong_status: list[str] = field(default_factory=list)  # WML status differs from spec.state
    duplicates: int = 0  # WML deployments beyond one per resource
    orphans: int = 0  # WML deployments of no resource (deleted, or never recorded)
    stuck: list[str] = field(default_factory=list)  # resources being deleted that still exist

    @property
    def ok(self) -> bool:
        return not (self.not_ready or self.wrong_status or self.duplicates or self.orphans or self.stuck)


def convergence(k8s_api: k8s.ApiClient, namespace: str, deployments: list[Deployment]) -> Convergence:
    out = Convergence()
    by_name: dict[str, list[Deployment]] = {}
    for dep in deployments:
        by_name.setdefault(dep.entity.name, []).append(dep)
    alive: set[str] = set()
    for obj in list_sdeps(k8s_api, namespace):
        name = obj["metadata"]["name"]
        if obj["metadata"].get("deletionTimestamp"):
            out.stuck.append(name)
            continue
        alive.add(f"{namespace}/{name}")
        ready = condition(obj, "Ready")
        status = obj.get("status", {})
        if not ready or ready["status"] != "True" or status.get("observedGeneration") != obj["metadata"]["generation"]:
            out.not_ready.append(name)
        mine = by_name.get(f"{namespace}/{name}", [])
        out.duplicates += max(0, len(mine) - 1)
        if len(mine) == 1 and (mine[0].id != status.get("deploymentId")
                               or mine[0].status != obj["spec"].get("state", "RUNNING")):
            out.wrong_status.append(f"{name}: {mine[0].status} {mine[0].id} vs {status.get('deploymentId')}")
        if not mine:
            out.not_ready.append(f"{name} (no WML deployment)")
    out.orphans = sum(len(deps) for name, deps in by_name.items() if name not in alive)
    return out


def wait_converged(k8s_api: k8s.ApiClient, namespace: str, service: WMLService, user: WMLUser,
                   timeout: float = 120.0) -> tuple[Convergence, float]:
    """Polls until converged or timeout; returns the last Convergence and the seconds it took."""
    client = wml_client(service, user)
    started = time.monotonic()
    while True:
        state = convergence(k8s_api, namespace, client.list_instance_deployments())
        if state.ok or time.monotonic() - started > timeout:
            return state, time.monotonic() - started
        time.sleep(0.5)
