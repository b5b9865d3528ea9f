"""Kubernetes-side helpers: a Secret store fed by the watch, so reconciles read Secrets without API calls, and
the status writer of the poller's passes."""

from __future__ import annotations

import base64
import threading
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from wml_operator.spec import GROUP, PLURAL, VERSION

SecretKey = tuple[str, str]


def decode(data: Mapping[str, bytes | str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        try:
            out[key] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            out[key] = ""  # binary: none of our keys hold binary data; treated as missing
    return out


class SecretStore:
    """Secrets that resources read, kept current by the watch; a miss is read from the API once."""

    def __init__(self, api: k8s.CoreV1Api | None = None) -> None:
        self._api = api
        self._data: dict[SecretKey, dict[str, str]] = {}
        self._lock = threading.Lock()
        self.api_reads = 0

    def set_api(self, api: k8s.CoreV1Api) -> None:
        self._api = api

    def observe(self, event_type: str | None, namespace: str, name: str, body: Mapping[str, Any]) -> bool:
        """Feeds a watch event; True when a Secret we hold (or that someone waits for) changed."""
        key = (namespace, name)
        with self._lock:
            if event_type == "DELETED":
                return self._data.pop(key, None) is not None
            held = key in self._data
            if held:
                new = decode(body.get("data"))
                changed = new != self._data[key]
                self._data[key] = new
                return changed
            return False

    def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        key = (namespace, name)
        with self._lock:
            if key in self._data:
                return self._data[key]
        if self._api is None:
            return None
        try:
            secret = self._api.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        self.api_reads += 1
        data = decode(secret.data)
        with self._lock:
            self._data[key] = data
        return data


class StatusWriter:
    """Merge-patches the status subresource, as kopf does with the status its handlers leave in their patch."""

    def __init__(self, api: k8s.CustomObjectsApi | None = None) -> None:
        self._api = api

    def set_api(self, api: k8s.CustomObjectsApi) -> None:
        self._api = api

    def __call__(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """False when the resource is gone (deleted meanwhile: nothing left to report on)."""
        assert self._api is not None, "set_api() first"
        try:
            self._api.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status},
                _content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True
