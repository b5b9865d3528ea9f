"""Kubernetes-side helpers: a Secret store fed by the watch, so passes read Secrets without API calls, and the
one writer of the status."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from wml_operator.spec import GROUP, PLURAL, VERSION
from wml_operator.status import KOPF

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
    """Writes a pass's status: only when it changed, only what changed (a field no longer reported is set to
    null), once per pass. A pass run by a kopf handler writes into the handler's patch, so that kopf's own
    bookkeeping (status.kopf, see persistence.py) goes in the same request; the poller's passes merge-patch the
    status subresource themselves."""

    def __init__(self, api: k8s.CustomObjectsApi | None = None, on_write: Callable[[], None] | None = None) -> None:
        self._api = api
        self._on_write = on_write

    def set_api(self, api: k8s.CustomObjectsApi) -> None:
        self._api = api

    def write(self, body: Mapping[str, Any], status: Mapping[str, Any], patch: kopf.Patch | None = None) -> bool:
        """False when the resource is gone (deleted meanwhile: nothing left to report on)."""
        old = {k: v for k, v in (body.get("status") or {}).items() if k != KOPF}
        # Compared whole, not by lastSyncTime: that has 1 s resolution, and a change made in the same second as
        # the last write (a re-create right after a flip) would not be written.
        if dict(status) == old:
            return True
        delta = {**{k: None for k in old if k not in status}, **status}
        if self._on_write is not None:
            self._on_write()
        if patch is not None:
            patch.status.update(delta)
            return True
        assert self._api is not None, "set_api() first"
        meta = body["metadata"]
        try:
            self._api.patch_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": delta},
                _content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True
