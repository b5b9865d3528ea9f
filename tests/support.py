"""Small test doubles shared by several suites (unit tests of one module only)."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from wml_api.errors import NotFound
from wml_api.models import EXTENSIONS, Deployment, DeploymentCreate, SparkServiceInstance, StatusDetails
from wml_operator.secrets import Endpoint
from wml_operator.wml import Listing


class DictSecrets:
    """A SecretReader over a dict of Secret name -> decoded data, for one namespace."""

    def __init__(self, data: dict[str, dict[str, str]], namespace: str | None = None) -> None:
        self.data = data
        self.namespace = namespace

    def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        if self.namespace is not None:
            assert namespace == self.namespace, f"read from namespace {namespace}, expected {self.namespace}"
        return self.data.get(name)


class MemoryWML:
    """An in-memory WML instance for unit tests of the reconciler: implements ports.Connector (one instance
    whatever the endpoint) and ports.WML. `fail[call] = error` makes that call raise once; `calls` records
    every call; `answer_status` is what a created or patched deployment reports (WML's own status after it)."""

    def __init__(self, models: tuple[str, ...] = ("m1",), answer_status: str | None = None,
                 extensions: frozenset[str] = frozenset(EXTENSIONS)) -> None:
        self.models = set(models)
        self.extension_names = extensions
        self.bodies: dict[str, DeploymentCreate] = {}  # the create body of each deployment
        self.deployments: dict[str, Deployment] = {}
        self.calls: list[tuple[str, ...]] = []
        self.fail: dict[str, Exception] = {}
        self.answer_status = answer_status
        self.endpoints: list[Endpoint] = []
        self._ids = itertools.count(1)

    # ports.Connector
    def instance(self, endpoint: Endpoint) -> MemoryWML:
        self.endpoints.append(endpoint)
        return self

    def _call(self, *call: str) -> None:
        self.calls.append(call)
        error = self.fail.pop(call[0], None)
        if error is not None:
            raise error

    # ports.WML
    def listing(self, max_age: float) -> Listing:
        self._call("list", str(max_age))
        return Listing.of(0.0, dict(self.deployments))

    def extensions(self) -> frozenset[str]:
        self._call("extensions")
        return self.extension_names

    def check(self, model_id: str, body: DeploymentCreate, spark: SparkServiceInstance) -> None:
        self._call("check", model_id)
        self._model(model_id)

    def model(self, model_id: str) -> None:
        self._call("model", model_id)
        self._model(model_id)

    def _model(self, model_id: str) -> None:
        if model_id not in self.models:
            raise NotFound(f"Published model {model_id} does not exist.", method="POST", path="/v3/...", status=404)

    def get(self, deployment_id: str) -> Deployment | None:
        self._call("get", deployment_id)
        return self.deployments.get(deployment_id)

    def create(self, model_id: str, body: DeploymentCreate, spark: SparkServiceInstance) -> Deployment:
        self._call("create", model_id)
        self._model(model_id)
        deployment_id = f"dep-{next(self._ids)}"
        status = self.answer_status or "INITIALIZING"
        if body.initial_status == "STOPPED" and "initial_status" in self.extension_names:
            status = "STOPPED"
        deployment = Deployment.model_validate({
            "metadata": {"guid": deployment_id, "url": f"http://wml/v3/wml_instances/i/published_models/{model_id}"
                                                       f"/deployments/{deployment_id}"},
            "entity": {"type": "stream", "name": body.name, "description": body.description,
                       "status": status, "published_model": {"guid": model_id},
                       "input": body.input.model_dump(mode="json") if body.input else None}})
        self.deployments[deployment_id] = deployment
        self.bodies[deployment_id] = body
        return deployment

    def set_state(self, model_id: str, deployment_id: str, value: str, spark: SparkServiceInstance) -> Deployment:
        self._call("patch", deployment_id, value)
        self.set_status(deployment_id, self.answer_status or value)
        return self.deployments[deployment_id]

    def delete(self, deployment_id: str) -> None:
        self._call("delete", deployment_id)
        self.deployments.pop(deployment_id, None)

    # for tests
    def set_status(self, deployment_id: str, status: str) -> None:
        old = self.deployments[deployment_id]
        self.deployments[deployment_id] = old.model_copy(
            update={"entity": old.entity.model_copy(update={"status": status})})

    def set_position(self, deployment_id: str, topic: str, offsets: dict[str, int]) -> None:
        old = self.deployments[deployment_id]
        details = {"position": {"topic": topic, "offsets": offsets}}
        self.deployments[deployment_id] = old.model_copy(update={"entity": old.entity.model_copy(
            update={"status_details": StatusDetails.model_validate(details)})})

    def changes(self) -> list[tuple[str, ...]]:
        """The calls that change WML (not the lists and reads)."""
        return [c for c in self.calls if c[0] not in ("list", "extensions", "get", "model", "check")]


DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def overlay_of_deploy(directory: Path, components: list[str]) -> Path:
    """A user's kustomize overlay of deploy/ with the named components, in `directory` (outside the repository,
    as a user would have it)."""
    directory.mkdir()
    # kustomize refuses absolute paths: refer to deploy/ relatively, as a sibling checkout would.
    base = os.path.relpath(DEPLOY, directory)
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [base], "components": [f"{base}/components/{name}" for name in components]}))
    return directory


def kustomize_build(kubectl: Callable[..., subprocess.CompletedProcess[str]], path: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize` renders from `path`."""
    return [doc for doc in yaml.safe_load_all(kubectl("kustomize", str(path)).stdout) if doc]


def alive(pid: int) -> bool:
    """Whether a process runs: not gone, and not a zombie waiting for its parent (or init) to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def children_running(parent: int, marker: bytes) -> list[int]:
    """The running child processes of `parent` whose command line holds `marker`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent and fields[0] != "Z" and marker in cmdline:
            found.append(int(entry.name))
    return sorted(found)
