"""The StreamingDeployments bench/operator_scale.py follows: a watch that keeps every state each resource went
through, with the time its event arrived, so that reading them adds no latency and asks the apiserver nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

GROUP, VERSION, PLURAL = "wmlstream.dev", "v1alpha1", "streamingdeployments"


@dataclass(frozen=True)
class Snapshot:
    at: float  # time.monotonic() when the watch event arrived here
    generation: int | None
    observed: int | None  # status.observedGeneration
    ready: bool
    wml_status: str | None
    deleted: bool = False

    @property
    def settled(self) -> bool:
        """Ready=True for the resource's current generation."""
        return self.ready and self.generation is not None and self.observed == self.generation


def snapshot(obj: dict[str, Any], at: float, deleted: bool = False) -> Snapshot:
    status = obj.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return Snapshot(at, obj["metadata"].get("generation"), status.get("observedGeneration"), ready,
                    status.get("wmlStatus"), deleted)


class Watcher:
    """A watch on one namespace's StreamingDeployments: every state each resource went through, with the time
    its event reached this process. Runs in a thread; re-lists when the watch expires (410)."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.namespace = namespace
        self.history: dict[str, list[Snapshot]] = {}
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._watch: k8s_watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{namespace}", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def _note(self, name: str, snap: Snapshot) -> None:
        with self.cond:
            self.history.setdefault(name, []).append(snap)
            self.cond.notify_all()

    def _run(self) -> None:
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
                    now = time.monotonic()
                    for obj in listed["items"]:
                        self._note(obj["metadata"]["name"], snapshot(obj, now))
                    rv = listed["metadata"]["resourceVersion"]
                self._watch = k8s_watch.Watch()
                for event in self._watch.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION,
                                                self.namespace, PLURAL, resource_version=rv, timeout_seconds=50,
                                                allow_watch_bookmarks=True):
                    obj = event["object"]
                    rv = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._note(obj["metadata"]["name"], snapshot(obj, time.monotonic(), event["type"] == "DELETED"))
                    if self._stop.is_set():
                        return
            except k8s.ApiException as exc:
                if exc.status == 410:
                    rv = ""  # expired: list again
                else:
                    time.sleep(0.5)
            except Exception:  # a broken connection: watch again from where we were
                time.sleep(0.5)

    def latest(self) -> dict[str, Snapshot]:
        with self.cond:
            return {name: snaps[-1] for name, snaps in self.history.items()}

    def first(self, name: str, since: float, check: Callable[[Snapshot], bool]) -> float | None:
        with self.cond:
            return next((s.at for s in self.history.get(name, []) if s.at >= since and check(s)), None)

    def wait(self, names: Iterable[str], check: Callable[[Snapshot], bool], timeout: float) -> bool:
        """Until the latest state of every named resource passes check (a missing one fails it)."""
        wanted = set(names)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                pending = {n for n in wanted if not (self.history.get(n) and check(self.history[n][-1]))}
                if not pending:
                    return True
                wanted = pending
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 1.0))

    def left_ready(self, since: float) -> list[str]:
        """Resources with a state after `since` that is not Ready (for their generation or at all)."""
        with self.cond:
            return sorted(n for n, snaps in self.history.items()
                          if any(s.at >= since and not s.deleted and not s.ready for s in snaps))
