"""`spec.modelRef`: which published model (and version) a StreamingDeployment runs, read from its PublishedModel.

A PublishedModel that is not Ready yet makes a new stream wait (Reconciling/ModelNotReady), never fail. A stream
that runs already keeps the model it runs (status.modelId / modelVersion) while its PublishedModel is being
published again or cannot be: only a new Ready version re-creates it, through the hand-over.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client as k8s

from wml_operator.published import publish as published
from wml_operator.secrets import Endpoint
from wml_operator.spec import GROUP, VERSION, StreamingDeploymentSpec

MODEL_PLURAL = "publishedmodels"


class ModelReader(Protocol):
    def read(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The PublishedModel's body, or None when it does not exist."""


@dataclass(frozen=True)
class Chosen:
    """The model a pass deploys; `version` only for a modelRef (a modelId deploys what WML holds)."""

    id: str
    version: str | None = None
    # Where the PublishedModel published it (url, instance id): a stream on another endpoint cannot deploy it.
    place: tuple[str, str] | None = field(default=None, compare=False)



class ModelNotReady(Exception):
    """A modelRef whose PublishedModel has no model to deploy yet: the stream waits."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = "ModelNotReady"
        self.message = message


def ready_model(body: Mapping[str, Any]) -> Chosen | str:
    """The model a PublishedModel offers (its id and version, once Ready for its current generation), else why
    not, for the StreamingDeployment's condition."""
    offered = published.ready_model(body)
    if not isinstance(offered, tuple):
        return f"spec.modelRef: {offered}"
    where = (body.get("status") or {}).get("endpoint") or {}
    place = (str(where["url"]), str(where["instanceId"])) if where.get("url") and where.get("instanceId") else None
    return Chosen(offered[0], offered[1], place)


def choose(spec: StreamingDeploymentSpec, namespace: str, status: Mapping[str, Any], reader: ModelReader,
           deleting: bool) -> Chosen:
    """The model of this pass. A modelRef not Ready falls back to what the deployment runs (status); with no
    deployment yet, ModelNotReady. A deletion needs no model: it deletes by deployment id."""
    if spec.model_id is not None:
        return Chosen(spec.model_id)
    assert spec.model_ref is not None  # the spec's validator: exactly one of the two
    running = Chosen(str(status["modelId"]), status.get("modelVersion")) if status.get("modelId") else None
    if deleting:
        return running or Chosen("-")
    try:
        body = reader.read(namespace, spec.model_ref.name)
        offered = ready_model(body) if body is not None else \
            f"spec.modelRef: PublishedModel {namespace}/{spec.model_ref.name} does not exist"
    except ModelNotReady as unread:
        offered = unread.message
    if isinstance(offered, Chosen):
        return offered
    if running is not None and status.get("deploymentId"):
        return running
    raise ModelNotReady(offered)


def same_place(chosen: Chosen, endpoint: Endpoint) -> None:
    """A model lives on the endpoint that published it: a stream on another one waits, saying so."""
    if chosen.place is not None and not endpoint.same_place({"url": chosen.place[0], "instanceId": chosen.place[1]}):
        raise ModelNotReady(f"spec.modelRef: the model is published on {chosen.place[0]} (instance "
                            f"{chosen.place[1]}), not on this stream's WML endpoint {endpoint.url} (instance "
                            f"{endpoint.instance_id}): give the two resources the same spec.wml")


class KubeModels:
    """PublishedModels as the watch last showed them (`seen`), read from the API when the watch has not shown one
    yet (a pass at start-up may come before the first event)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._get: Callable[[str, str], Mapping[str, Any] | None] | None = None

    def set_getter(self, get: Callable[[str, str], Mapping[str, Any] | None]) -> None:
        self._get = get

    def seen(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        with self._lock:
            if event_type == "DELETED":
                self._bodies.pop(key, None)
            else:
                self._bodies[key] = {"metadata": {k: meta.get(k) for k in ("name", "namespace", "generation",
                                                                            "deletionTimestamp")},
                                     "status": body.get("status") or {}}

    def read(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        with self._lock:
            body = self._bodies.get((namespace, name))
        if body is not None or self._get is None:
            return body
        return self._get(namespace, name)


def read_model(custom: k8s.CustomObjectsApi, namespace: str, name: str) -> Mapping[str, Any] | None:
    try:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, MODEL_PLURAL, name)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        # The status and reason only: an API error's text carries the response's headers and body.
        raise ModelNotReady(f"spec.modelRef: cannot read PublishedModel {namespace}/{name}: {exc.status} "
                            f"{exc.reason}") from None
    return body if isinstance(body, Mapping) else None
