"""The operator's process-wide state: settings, clients, caches, and which resources need a look."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from wml_operator import metrics
from wml_operator.kube import SecretStore
from wml_operator.reconcile import Deps, Reconciler, is_changing, poll_interval
from wml_operator.settings import OperatorSettings
from wml_operator.wml import ClientPool, InstanceCache


@dataclass
class Runtime:
    settings: OperatorSettings
    secrets: SecretStore = field(default_factory=SecretStore)
    dirty: set[str] = field(default_factory=set)
    next_attempt: dict[str, float] = field(default_factory=dict)
    last_run: dict[str, float] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)  # metadata.generation of the last pass, per UID
    passes: Counter[str] = field(default_factory=Counter)  # reconcile passes under way, per UID
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        pool = ClientPool(timeout=self.settings.wml_timeout, on_response=metrics.observe_request)
        self.reconciler = Reconciler(Deps(self.settings, self.secrets, pool, InstanceCache()))
        # How often the poller looks for due resources: a pass starts at most this late.
        self.tick = min(1.0, self.settings.poll_fast / 2)

    def mark_dirty(self, uid: str) -> None:
        with self.lock:
            self.dirty.add(uid)
            self.next_attempt.pop(uid, None)

    def due(self, uid: str, body: Mapping[str, Any]) -> bool:
        """Whether the poller should reconcile now: a Secret changed, a change is under way, or the
        resource's steady poll interval has passed. Backoff after transient errors wins over all."""
        now = time.monotonic()
        with self.lock:
            if self.passes[uid]:
                # A pass (a change handler's) is under way and its outcome says when the next is due: a poll
                # that waited for it would run right after it, past the backoff or Retry-After it just set.
                return False
            if self.next_attempt.get(uid, 0.0) > now:
                return False
            status = body.get("status") or {}
            generation = body.get("metadata", {}).get("generation")
            if uid not in self.last_run or self.generations.get(uid, generation) != generation:
                # A resource this process has not reconciled yet (new, or found at start-up), or a spec it has not
                # reconciled yet (or a body older than the one it did): kopf's create, resume or update handler
                # runs that pass, and may still be queued behind a burst of others when the poller looks. A pass
                # here would do the same work on a body the handler then reconciles again, and write the status
                # a second time.
                return False
            if uid in self.dirty:
                return True
            # Stalled waits for a user: a spec edit (update handler) or a Secret change (dirty) wakes it;
            # polling it fast would only repeat the refused call.
            stalled = any(c.get("type") == "Stalled" and c.get("status") == "True"
                          for c in status.get("conditions", []))
            changing = is_changing(status, generation) and not stalled
            interval = poll_interval(body, self.settings, changing)
            return now - self.last_run.get(uid, 0.0) >= interval - self.tick / 2

    @contextlib.contextmanager
    def passing(self, uid: str) -> Iterator[None]:
        with self.lock:
            self.passes[uid] += 1
        try:
            yield
        finally:
            with self.lock:
                self.passes[uid] -= 1
                if self.passes[uid] <= 0:
                    del self.passes[uid]

    def ran(self, uid: str, retry_after: float | None = None, *, generation: int | None = None) -> None:
        """A pass ended; `retry_after`: it did not get through (WML unreachable, or its status not written), and
        the poller tries again after that long."""
        with self.lock:
            self.last_run[uid] = time.monotonic()
            if generation is not None:
                self.generations[uid] = generation
            if retry_after is None:
                self.dirty.discard(uid)
                self.next_attempt.pop(uid, None)
            else:
                self.dirty.add(uid)
                self.next_attempt[uid] = time.monotonic() + retry_after

    def forget(self, uid: str) -> None:
        with self.lock:
            for table in (self.next_attempt, self.last_run, self.generations):
                table.pop(uid, None)
            self.dirty.discard(uid)
        metrics.set_resource_status(uid, None)
