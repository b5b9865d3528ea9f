"""Copies of the WML logins a resource's deletion needs, kept where its own namespace cannot take them first.

Deleting a WML deployment needs the endpoint and a login (URL, instance, username, password, CA), which live in
the user's Secrets. A namespace deletion removes those Secrets at once while the resource waits on its finalizer,
and a GitOps prune may remove them in the same sync as the resource: an operator that was down (or restarting)
then could not delete the stream, and the namespace stayed Terminating for good. So every pass that resolves a
resource first keeps a copy of its logins in one Secret of the operator's own namespace (`wml-login-<uid>`),
written only when it changes and before any WML call that could create a deployment; deletion falls back to it
when the user's Secrets are gone. The copy goes when the resource does, and a sweep removes copies whose resource
no longer exists (an operator killed between the two).

Why a copy rather than a finalizer on the user's Secrets (the `kubernetes.io/pvc-protection` pattern): that would
need write access (patch) to every Secret of every watched namespace, and would hold users' Secrets in
Terminating when the operator is uninstalled. A copy needs write access only in the operator's own namespace.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from wml_api.credentials import WMLCredentials
from wml_operator.secrets import Endpoint

PREFIX = "wml-login-"
KEY = "endpoints.json"
LABELS = {"app.kubernetes.io/managed-by": "wml-stream-operator", "wmlstream.dev/login-copy": "true"}
SELECTOR = ",".join(f"{k}={v}" for k, v in LABELS.items())
ANNOTATION_RESOURCE = "wmlstream.dev/resource"  # namespace/name, for people looking at the copies


class LoginNotKept(Exception):
    """The copy could not be written: no deployment is created until it is (its deletion could get stuck)."""


class Logins(Protocol):
    def keep(self, uid: str, resource: str, endpoints: Sequence[Endpoint]) -> None:
        """Holds these endpoints' logins for resource `uid` ("namespace/name"); raises LoginNotKept."""

    def kept(self, uid: str) -> tuple[Endpoint, ...]:
        """What was last kept for `uid`, across restarts of the operator."""

    def drop(self, uid: str) -> None:
        """The resource is gone: its copy goes."""


def _entry(ep: Endpoint) -> dict[str, str]:
    out = {"url": ep.url, "instanceId": ep.instance_id, "username": ep.credentials.username,
           "password": ep.credentials.password}
    if ep.ca_pem:
        out["caPem"] = ep.ca_pem
    if ep.credentials_secret:
        out["credentialsSecret"] = ep.credentials_secret
    if ep.ca_secret:
        out["caSecret"] = ep.ca_secret
    return out


def _endpoint(entry: dict[str, Any]) -> Endpoint:
    return Endpoint(str(entry["url"]), str(entry["instanceId"]),
                    WMLCredentials(str(entry["username"]), str(entry["password"])), entry.get("caPem"),
                    credentials_secret=entry.get("credentialsSecret"), ca_secret=entry.get("caSecret"))


def encode(endpoints: Sequence[Endpoint]) -> str:
    return json.dumps([_entry(ep) for ep in endpoints], sort_keys=True)


def decode(text: str) -> tuple[Endpoint, ...]:
    """A copy's content; one that does not parse holds nothing (and is rewritten by the next pass)."""
    try:
        entries = json.loads(text)
        return tuple(_endpoint(e) for e in entries)
    except (ValueError, TypeError, KeyError):
        return ()


def _content(raw: bytes | str | None) -> str:
    """A copy's stored content; one that does not decode holds nothing (the next pass writes it again)."""
    try:
        return base64.b64decode(raw).decode() if raw else "[]"
    except (ValueError, UnicodeDecodeError):
        return "[]"


def unique(endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """One entry per place (URL and instance), the first given wins."""
    seen: set[tuple[str, str]] = set()
    out = []
    for ep in endpoints:
        if (ep.url, ep.instance_id) not in seen:
            seen.add((ep.url, ep.instance_id))
            out.append(ep)
    return out


class MemoryLogins:
    """In this process only: for tests of the reconciler, and what `kept` falls back to without an API."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[Endpoint, ...]] = {}
        self._lock = threading.Lock()

    def keep(self, uid: str, resource: str, endpoints: Sequence[Endpoint]) -> None:
        with self._lock:
            self._kept[uid] = tuple(unique(endpoints))

    def kept(self, uid: str) -> tuple[Endpoint, ...]:
        with self._lock:
            return self._kept.get(uid, ())

    def drop(self, uid: str) -> None:
        with self._lock:
            self._kept.pop(uid, None)

    def uids(self) -> set[str]:
        with self._lock:
            return set(self._kept)


class SecretLogins:
    """The copies as Secrets in the operator's own namespace, with what they hold cached in memory: a pass whose
    logins did not change costs no API call. `load()` fills the cache at start-up with one paged list."""

    def __init__(self, namespace: str, api: k8s.CoreV1Api | None = None) -> None:
        self.namespace = namespace
        self._api = api
        self._cache: dict[str, str] = {}  # uid -> encoded content, as written
        self._lock = threading.Lock()
        self.writes = 0

    def set_api(self, api: k8s.CoreV1Api) -> None:
        self._api = api

    @property
    def api(self) -> k8s.CoreV1Api:
        assert self._api is not None, "set_api() first"
        return self._api

    def _secret(self, uid: str, resource: str, content: str) -> k8s.V1Secret:
        return k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name=PREFIX + uid, namespace=self.namespace, labels=dict(LABELS),
                                      annotations={ANNOTATION_RESOURCE: resource}),
            type="Opaque", data={KEY: base64.b64encode(content.encode()).decode()})

    def load(self) -> dict[str, str]:
        """Every copy in the namespace: {uid: the resource's namespace/name}. The cache becomes what the list
        shows: a copy deleted behind the operator's back is written again by the next pass of its resource."""
        found: dict[str, str] = {}
        listed: dict[str, str] = {}
        cont: str | None = None
        while True:
            page = self.api.list_namespaced_secret(self.namespace, label_selector=SELECTOR, limit=200,
                                                   _continue=cont)
            for item in page.items:
                meta = item.metadata or k8s.V1ObjectMeta()
                name = meta.name or ""
                if not name.startswith(PREFIX):
                    continue
                uid = name[len(PREFIX):]
                listed[uid] = _content((item.data or {}).get(KEY))
                found[uid] = (meta.annotations or {}).get(ANNOTATION_RESOURCE, "")
            cont = page.metadata.var_continue if page.metadata else None
            if not cont:
                with self._lock:
                    self._cache = listed
                return found

    def keep(self, uid: str, resource: str, endpoints: Sequence[Endpoint]) -> None:
        content = encode(unique(endpoints))
        with self._lock:
            if self._cache.get(uid) == content:
                return
            known = uid in self._cache
        body = self._secret(uid, resource, content)
        try:
            try:
                if known:
                    self.api.replace_namespaced_secret(PREFIX + uid, self.namespace, body)
                else:
                    self.api.create_namespaced_secret(self.namespace, body)
            except ApiException as exc:
                if exc.status == 409 and not known:  # made by an earlier run, not loaded yet
                    self.api.replace_namespaced_secret(PREFIX + uid, self.namespace, body)
                elif exc.status == 404 and known:  # deleted by someone
                    self.api.create_namespaced_secret(self.namespace, body)
                else:
                    raise
        except ApiException as exc:
            # The API's answer, never the body we sent (it holds the logins).
            raise LoginNotKept(f"cannot keep a copy of the WML login for deletion in Secret "
                               f"{self.namespace}/{PREFIX}{uid}: {exc.status} {exc.reason}") from None
        self.writes += 1
        with self._lock:
            self._cache[uid] = content

    def kept(self, uid: str) -> tuple[Endpoint, ...]:
        with self._lock:
            content = self._cache.get(uid)
        if content is None:
            try:
                secret = self.api.read_namespaced_secret(PREFIX + uid, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return ()
                raise
            content = _content((secret.data or {}).get(KEY))
            with self._lock:
                self._cache[uid] = content
        return decode(content)

    def drop(self, uid: str) -> None:
        with self._lock:
            self._cache.pop(uid, None)
        try:
            self.api.delete_namespaced_secret(PREFIX + uid, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def sweep(self, live: Callable[[], set[str]], watched: Callable[[str], bool]) -> list[str]:
        """Deletes the copies whose resource no longer exists, and returns their UIDs. `live` lists the resources'
        UIDs; it is called after the copies are listed. A copy is written only for a resource that exists, so a
        UID missing from that later list is a resource that is gone. Copies of resources in namespaces this
        operator does not watch are left to the operator that does."""
        copies = self.load()
        uids = live()
        gone = [uid for uid, resource in copies.items()
                if uid not in uids and watched(resource.partition("/")[0])]
        for uid in gone:
            self.drop(uid)
        return gone
