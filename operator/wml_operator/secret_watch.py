"""Which Secrets changed, without reading any: a metadata-only list and watch (PartialObjectMetadata).

The operator used to watch Secrets with kopf, which lists and watches whole objects: every Secret of every
watched namespace came into the process at start-up (2,000 Helm release Secrets of 48 KB took its start-up peak
from 90 MB to 580 MB, past its memory limit), and every change to any of them woke it. Here the API server sends
only each Secret's metadata, a page of `PAGE` at a time, and nothing is kept of a Secret no resource references:
each event is handed to a `Sink` (wml_operator.app), which looks its name up among the referenced ones and drops
it otherwise. The data of a referenced Secret is read by name (kube.SecretStore) when its resourceVersion moves.

One thread per watched namespace when WML_OPERATOR_NAMESPACES names them, or one for the whole cluster when the
operator watches every namespace or a glob of them (kopf follows the namespaces a glob matches; this watch does
not, and needs the cluster-wide grant then). Each runs list, then watch from the list's resourceVersion with
bookmarks, and lists again after `410 Gone` or an error (after a pause that grows to `MAX_PAUSE`). While a scope's
watch is not in place (`healthy`), the store trusts nothing it holds from there and passes read again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol, cast

import urllib3
from kubernetes import client as k8s
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)

LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
WATCH_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
PAGE = 500
WATCH_SECONDS = 300
MAX_PAUSE = 30.0


class Sink(Protocol):
    def listing(self, scope: str | None) -> None:
        """A list of `scope` (a namespace; None: every namespace) begins."""

    def event(self, kind: str, namespace: str, name: str, resource_version: str | None) -> None:
        """kind: LISTED (an item of the list), ADDED, MODIFIED or DELETED."""

    def listed(self, scope: str | None) -> None:
        """The list is complete: a Secret held from `scope` that it did not show is gone."""


def scopes(namespaces: Sequence[str], extra: Sequence[str] = ()) -> list[str | None]:
    """The namespaces to watch one by one, or [None] (the whole cluster) for every namespace or a glob."""
    if not namespaces or any(ch in n for n in namespaces for ch in "*?[!"):
        return [None]
    return [*sorted(set(namespaces) | set(extra))]


class Gone(Exception):
    """410: the resourceVersion is too old; list again."""


class SecretWatch:
    def __init__(self, core: k8s.CoreV1Api, sink: Sink, namespaces: Sequence[str | None], *, page: int = PAGE,
                 watch_seconds: int = WATCH_SECONDS) -> None:
        self.core = core
        self.sink = sink
        self.namespaces = list(namespaces)
        self.page = page
        self.watch_seconds = watch_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: set[urllib3.HTTPResponse] = set()
        self._lock = threading.Lock()
        self.synced = threading.Event()  # every scope listed once
        self._unsynced = len(self.namespaces)
        self._healthy: set[str | None] = set()  # scopes listed, and watched since
        self._refused: set[str | None] = set()  # scopes the API refused (403), said once
        self.lists = 0  # complete lists, for tests and the bench

    def healthy(self, namespace: str) -> bool:
        """Whether a change of a Secret in `namespace` reaches the store now."""
        with self._lock:
            return None in self._healthy or namespace in self._healthy

    def start(self) -> None:
        for scope in self.namespaces:
            thread = threading.Thread(target=self._run, args=(scope,), name=f"secret-watch-{scope or 'all'}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            for resp in list(self._open):
                _wake(resp)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _get(self, scope: str | None, accept: str, timeout: float, **params: Any) -> urllib3.HTTPResponse:
        kwargs: dict[str, Any] = {"_preload_content": False, "_headers": {"Accept": accept},
                                  "_request_timeout": (10, timeout), **params}
        # Without preloading, the client returns urllib3's response as it is (its annotation names the model).
        resp = cast(urllib3.HTTPResponse, self.core.list_namespaced_secret(scope, **kwargs) if scope
                    else self.core.list_secret_for_all_namespaces(**kwargs))
        with self._lock:
            self._open.add(resp)
        return resp

    def _done(self, resp: urllib3.HTTPResponse, complete: bool) -> None:
        with self._lock:
            self._open.discard(resp)
        if not complete:
            resp.close()  # a half-read response must not go back to the pool
        resp.release_conn()

    def _run(self, scope: str | None) -> None:
        pause = 1.0
        while not self._stop.is_set():
            try:
                version = self._list(scope)
                pause = 1.0
                while not self._stop.is_set():
                    version = self._watch(scope, version)
            except Gone:
                self._set_healthy(scope, False)
                continue
            except Exception as exc:  # the thread must outlive any failure: it lists again after a pause
                self._set_healthy(scope, False)
                if self._stop.is_set():
                    return  # stop() closed the response under the read
                status = getattr(exc, "status", None)
                where = scope or "all namespaces"
                if status == 403:
                    if scope not in self._refused:
                        self._refused.add(scope)
                        log.error("Secret watch of %s refused (403): rotations there are noticed only by the next "
                                  "poll, which reads the Secrets again. %s", where,
                                  "A glob in WML_OPERATOR_NAMESPACES needs list/watch on Secrets cluster-wide."
                                  if scope is None else "Grant list/watch on Secrets in that namespace.")
                else:
                    log.warning("Secret watch of %s: %s; listing again in %.0f s", where,
                                f"{status} {getattr(exc, 'reason', '')}" if status else type(exc).__name__, pause)
                self._stop.wait(pause)
                pause = min(pause * 2, MAX_PAUSE)

    def _set_healthy(self, scope: str | None, healthy: bool) -> None:
        with self._lock:
            if healthy:
                self._healthy.add(scope)
                self._refused.discard(scope)
            else:
                self._healthy.discard(scope)

    def _list(self, scope: str | None) -> str:
        self.sink.listing(scope)
        cont: str | None = None
        while True:
            resp = self._get(scope, LIST_ACCEPT, 60, limit=self.page, _continue=cont)
            complete = False
            try:
                page = json.loads(resp.data)
                complete = True
            finally:
                self._done(resp, complete)
            for item in page.get("items") or ():
                meta = item.get("metadata") or {}
                self.sink.event("LISTED", meta.get("namespace", ""), meta.get("name", ""),
                                meta.get("resourceVersion"))
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                self.sink.listed(scope)
                self._set_healthy(scope, True)
                self.lists += 1
                with self._lock:
                    if self._unsynced > 0:
                        self._unsynced -= 1
                        if self._unsynced == 0:
                            self.synced.set()
                return str((page.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, scope: str | None, version: str) -> str:
        started = time.monotonic()
        resp = self._get(scope, WATCH_ACCEPT, self.watch_seconds + 30, watch=True, allow_watch_bookmarks=True,
                         timeout_seconds=self.watch_seconds, resource_version=version or None)
        complete = False
        try:
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                event = json.loads(line)
                kind = event.get("type")
                meta = (event.get("object") or {}).get("metadata") or {}
                if kind == "ERROR":
                    if (event.get("object") or {}).get("code") == 410:
                        raise Gone()
                    raise ValueError(f"watch error {(event.get('object') or {}).get('code')}")
                version = meta.get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.sink.event(kind, meta.get("namespace", ""), meta.get("name", ""),
                                    meta.get("resourceVersion"))
            complete = True
        finally:
            self._done(resp, complete)
        if time.monotonic() - started < 1 and not self._stop.is_set():
            self._stop.wait(1)  # a server that ends watches at once must not be called in a loop
        return version


def _wake(resp: urllib3.HTTPResponse) -> None:
    """Wakes the thread blocked reading `resp` by shutting its socket down; that thread then closes it. A close()
    from here would wait for that thread's read to return (the buffered reader's lock): a stop of the operator took
    until the watch's own timeout, or its SIGKILL, instead of a moment."""
    sock = getattr(getattr(resp, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
