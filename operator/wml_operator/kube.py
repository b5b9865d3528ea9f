"""Kubernetes-side helpers: the store of referenced Secrets (read by name, dropped when the metadata watch says
they changed), and the one writer of the status."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import kopf
from kopf._cogs.structs import references
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from wml_operator.spec import GROUP, PLURAL, VERSION
from wml_operator.status import KOPF

SecretKey = tuple[str, str]


TLS_SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 (a Secret type, not a password)
TLS_PRIVATE_KEY = "tls.key"


def decode(data: Mapping[str, bytes | str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        try:
            out[key] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            out[key] = ""  # binary: none of our keys hold binary data; treated as missing
    return out


class SecretStore:
    """The data of the Secrets that passes read, each read by name once and held until it changes.

    It is also the secret_watch.Sink: the metadata-only watch tells it which Secrets changed (a new
    resourceVersion, or deleted), and it drops what it held of them and wakes the resources that reference them
    (`wake`). Events of Secrets nobody references cost a dictionary look-up; their data is never read.
    """

    def __init__(self, api: k8s.CoreV1Api | None = None, on_read: Callable[[], None] | None = None,
                 on_event: Callable[[], None] | None = None) -> None:
        self._api = api
        self._on_read = on_read
        self._on_event = on_event
        self._data: dict[SecretKey, tuple[str | None, dict[str, str]]] = {}  # (resourceVersion, data)
        self._lock = threading.Lock()
        # Bumped by every change of a held or wanted Secret: a read that raced with one is not kept, so the
        # pass the change wakes reads it again.
        self._epoch = 0
        self._listing: dict[str | None, set[SecretKey]] = {}  # scope -> held keys its current list showed
        self._reading: dict[SecretKey, int] = {}  # reads under way: an event for one of them also bumps the epoch
        self.wanted: Callable[[str, str], bool] = lambda namespace, name: False
        self.wake: Callable[[str, str], None] = lambda namespace, name: None
        # Whether a watch reports this namespace's changes now: if not (not started, or refused), every pass
        # reads its Secrets again instead of trusting what is held.
        self.watching: Callable[[str], bool] = lambda namespace: True
        self.api_reads = 0

    def set_api(self, api: k8s.CoreV1Api) -> None:
        self._api = api

    # --- secret_watch.Sink ------------------------------------------------------------------------------

    def listing(self, scope: str | None) -> None:
        with self._lock:
            self._listing[scope] = set()

    def event(self, kind: str, namespace: str, name: str, resource_version: str | None) -> None:
        key = (namespace, name)
        if self._on_event is not None:
            self._on_event()
        wanted = self.wanted(namespace, name)
        with self._lock:
            held = self._data.get(key)
            if kind == "LISTED" and held is not None:
                for scope, seen in self._listing.items():
                    if scope is None or scope == namespace:
                        seen.add(key)
            if kind == "DELETED":
                changed = self._data.pop(key, None) is not None
            else:
                changed = held is not None and held[0] != resource_version
                if changed:
                    del self._data[key]
            # A referenced Secret that appears (or was never read) may be what a Stalled resource waits for.
            wake = changed or (wanted and held is None)
            if wake or key in self._reading:
                self._epoch += 1
        if wake and wanted:
            self.wake(namespace, name)

    def listed(self, scope: str | None) -> None:
        with self._lock:
            seen = self._listing.pop(scope, set())
            gone = [key for key in self._data if key not in seen and (scope is None or key[0] == scope)]
            for key in gone:
                del self._data[key]
            if gone:
                self._epoch += 1
        for namespace, name in gone:
            if self.wanted(namespace, name):
                self.wake(namespace, name)

    # --- passes ---------------------------------------------------------------------------------------------

    def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        key = (namespace, name)
        watched = self.watching(namespace)
        with self._lock:
            if key in self._data and watched:
                return self._data[key][1]
            epoch = self._epoch
            self._reading[key] = self._reading.get(key, 0) + 1
        try:
            if self._api is None:
                return None
            try:
                secret = self._api.read_namespaced_secret(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            finally:
                self.api_reads += 1
                if self._on_read is not None:
                    self._on_read()
            data = decode(secret.data)
            if secret.type == TLS_SECRET_TYPE:
                # The operator reads a TLS Secret (wml-server-tls, say) only for its CA: its private key is not
                # held in memory, where a heap dump or a core file would show it.
                data.pop(TLS_PRIVATE_KEY, None)
            with self._lock:
                if self._epoch == epoch and watched:
                    self._data[key] = (secret.metadata.resource_version if secret.metadata else None, data)
            return data
        finally:
            with self._lock:
                self._reading[key] -= 1
                if not self._reading[key]:
                    del self._reading[key]

    def release(self, keys: Iterable[SecretKey]) -> None:
        """No resource references these any more: their data goes."""
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def held(self) -> int:
        with self._lock:
            return len(self._data)


def watched(namespace: str, namespaces: Sequence[str]) -> bool:
    """Whether the operator watches `namespace` (WML_OPERATOR_NAMESPACES: names, globs, `!` exclusions, as kopf
    reads them; empty: all)."""
    return not namespaces or any(references.match_namespace(references.NamespaceName(namespace), pattern)
                                 for pattern in namespaces)


def list_resources(api: k8s.CustomObjectsApi, namespaces: Sequence[str],
                   plural: str = PLURAL) -> Iterator[dict[str, Any]]:
    """Every StreamingDeployment (or other kind of ours, by `plural`) the operator watches, a page at a time."""
    exact = namespaces and not any(ch in n for n in namespaces for ch in "*?[!")
    for namespace in (namespaces if exact else [None]):
        cont: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500, "_continue": cont} if cont else {"limit": 500}
            page = cast(dict[str, Any], api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, **kwargs)
                        if namespace else api.list_cluster_custom_object(GROUP, VERSION, plural, **kwargs))
            for item in page.get("items") or ():
                if watched(item["metadata"]["namespace"], namespaces):
                    yield item
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                break


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

    @property
    def api(self) -> k8s.CustomObjectsApi | None:
        return self._api

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
