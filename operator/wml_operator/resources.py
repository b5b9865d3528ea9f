"""Everything the operator keeps per resource, in one table with one `forget()`.

Per StreamingDeployment UID: its latest body from the watch (trimmed), the Secrets its spec names, when it was
last reconciled and for which generation, when it may be tried again (backoff), whether a Secret change
marked it dirty, passes under way, whether this process sent a create for it, the lock that serialises its
passes, and the WML status the metrics count. Nothing else in the operator holds per-resource state in memory, so
deleting a resource frees all of it (the copy of its logins is in the cluster: wml_operator.login_copies).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from wml_operator import plan
from wml_operator.secrets import referenced_secrets
from wml_operator.spec import GROUP, parse_spec

SecretKey = tuple[str, str]  # (namespace, name)
# Annotations a pass reads are ours; kubectl's last-applied-configuration (a copy of the whole manifest) and
# kopf's bookkeeping are not worth keeping for every resource.
_OUR_ANNOTATIONS = f"{GROUP}/"


@dataclass
class ResourceState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    body: dict[str, Any] | None = None  # trimmed, as the watch last showed it
    secrets: frozenset[SecretKey] = frozenset()
    secrets_generation: int | None = None  # the generation `secrets` was parsed from
    last_run: float | None = None  # monotonic
    generation: int | None = None  # metadata.generation of the last pass
    next_attempt: float = 0.0  # monotonic; a backoff or Retry-After runs until then
    dirty: bool = False  # a Secret it reads changed, or its last pass did not get through
    wakes: int = 0  # how many times it was marked dirty
    wakes_seen: int = 0  # `wakes` when the latest pass began: a wake after that is not yet seen by any pass
    passes: int = 0  # reconcile passes under way
    failures: int = 0  # passes in a row that could not reach WML
    created: bool = False  # this process sent a create for it
    wml_status: str | None = None  # as the metrics count it


def trimmed(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a pass and an Event need of a body, without managedFields and foreign annotations: at 1,000
    resources the whole bodies would be several MB kept only for this."""
    meta = body.get("metadata") or {}
    keep = {k: meta[k] for k in ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp")
            if k in meta}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(_OUR_ANNOTATIONS)}
    if annotations:
        keep["annotations"] = annotations
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": keep,
            "spec": body.get("spec"), "status": body.get("status")}


def _secret_keys(body: Mapping[str, Any], default: SecretKey | None = None,
                 default_ca: SecretKey | None = None) -> frozenset[SecretKey]:
    """The Secrets a resource reads: those its spec names, the operator's default WML credentials (`default`)
    when it names none of its own, and the default CA (`default_ca`) when it names no caSecretRef (it may be
    on the default endpoint: a rotated CA must wake it)."""
    namespace = (body.get("metadata") or {}).get("namespace") or ""
    try:
        spec = parse_spec(body.get("spec"))
    except ValueError:  # an invalid spec names no Secret it could be woken by; its fix is a spec edit
        return frozenset()
    keys = {(namespace, name) for name in referenced_secrets(spec)}
    if default is not None and not (spec.wml and spec.wml.credentials_secret_ref):
        keys.add(default)
    if default_ca is not None and not (spec.wml and spec.wml.ca_secret_ref):
        keys.add(default_ca)
    return frozenset(keys)


class Resources:
    """The one owner of per-resource state (see the module's text). Thread-safe: the watch handlers call it in
    kopf's event loop, the passes from handler threads."""

    def __init__(self, poll_fast: float, poll_slow: float,
                 on_status: Callable[[str | None, str | None], None] | None = None,
                 on_release: Callable[[list[SecretKey]], None] | None = None,
                 default_secret: SecretKey | None = None, default_ca: SecretKey | None = None) -> None:
        self.poll_fast = poll_fast
        self.poll_slow = poll_slow
        # How often the poller looks for due resources: a pass starts at most this late.
        self.tick = min(1.0, poll_fast / 2)
        self._on_status = on_status  # (old, new) WML status of one resource, for the metrics' counts
        self._on_release = on_release  # Secrets no resource references any more (kube.SecretStore.release)
        self._default_secret = default_secret  # the operator's default WML credentials, (namespace, name)
        self._default_ca = default_ca  # the Secret of the default endpoint's CA, (namespace, name)
        self._states: dict[str, ResourceState] = {}
        self._users: dict[SecretKey, set[str]] = {}  # which resources read a Secret
        self._lock = threading.Lock()

    # --- the watch --------------------------------------------------------------------------------------

    def track(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Every watch event of a StreamingDeployment: keeps its body and the Secrets it names."""
        uid = (body.get("metadata") or {}).get("uid")
        if not uid:
            return
        if event_type == "DELETED":
            self.forget(uid)
            return
        generation = (body.get("metadata") or {}).get("generation")
        released: list[SecretKey] = []
        with self._lock:
            state = self._states.setdefault(uid, ResourceState())
            if state.body is None or state.secrets_generation != generation:  # new, or the spec changed
                released = self._refer(uid, state, _secret_keys(body, self._default_secret, self._default_ca))
                state.secrets_generation = generation
            state.body = trimmed(body)
        self._released(released)

    def _refer(self, uid: str, state: ResourceState, keys: frozenset[SecretKey]) -> list[SecretKey]:
        """Returns the Secrets no resource references any more."""
        released = []
        for key in state.secrets - keys:
            users = self._users.get(key)
            if users is not None:
                users.discard(uid)
                if not users:
                    del self._users[key]
                    released.append(key)
        for key in keys:
            self._users.setdefault(key, set()).add(uid)
        state.secrets = keys
        return released

    def _released(self, keys: list[SecretKey]) -> None:
        if keys and self._on_release is not None:
            self._on_release(keys)

    def referenced(self, namespace: str, name: str) -> bool:
        with self._lock:
            return (namespace, name) in self._users

    def users_of(self, namespace: str, name: str) -> list[str]:
        """The UIDs of the resources whose spec names this Secret."""
        with self._lock:
            return sorted(self._users.get((namespace, name), ()))

    def model_users(self, namespace: str, name: str) -> list[str]:
        """The UIDs of the resources whose spec.modelRef names this PublishedModel (a scan: models change
        seldom, unlike Secrets, which have an index)."""
        with self._lock:
            return sorted(uid for uid, s in self._states.items() if s.body is not None
                          and s.body["metadata"].get("namespace") == namespace
                          and ((s.body.get("spec") or {}).get("modelRef") or {}).get("name") == name)

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.body for s in self._states.values() if s.body is not None]

    # --- scheduling ---------------------------------------------------------------------------------------

    def mark_dirty(self, uid: str) -> None:
        with self._lock:
            state = self._states.get(uid)
            if state is not None:
                state.dirty = True
                state.wakes += 1
                state.next_attempt = 0.0

    def mark_dirty_users(self, namespace: str, name: str) -> None:
        """A Secret changed: the resources that reference it are reconciled within one tick of the poller."""
        for uid in self.users_of(namespace, name):
            self.mark_dirty(uid)

    def due(self, uid: str, body: Mapping[str, Any]) -> bool:
        """Whether the poller should reconcile now: a Secret changed, a change is under way, or the
        resource's steady poll interval has passed. Backoff after transient errors wins over all."""
        now = time.monotonic()
        with self._lock:
            state = self._states.get(uid)
            if state is None or state.passes:
                # A pass (a change handler's) is under way and its outcome says when the next is due: a poll
                # that waited for it would run right after it, past the backoff or Retry-After it just set.
                return False
            if state.next_attempt > now:
                return False
            status = body.get("status") or {}
            generation = body.get("metadata", {}).get("generation")
            if state.last_run is None or (state.generation if state.generation is not None else generation) \
                    != generation:
                # A resource this process has not reconciled yet (new, or found at start-up), or a spec it has not
                # reconciled yet: kopf's create, resume or update handler runs that pass, and may still be queued
                # behind a burst of others when the poller looks. A pass here would do the same work on a body the
                # handler then reconciles again, and write the status a second time.
                return False
            if state.dirty:
                return True
            # Stalled waits for a user: a spec edit (update handler) or a Secret change (dirty) wakes it;
            # polling it fast would only repeat the refused call.
            changing = plan.is_changing(status, generation) and not plan.is_stalled(status)
            interval = plan.poll_interval(body, self.poll_fast, self.poll_slow, changing)
            return now - state.last_run >= interval - self.tick / 2

    @contextlib.contextmanager
    def passing(self, uid: str) -> Iterator[threading.Lock]:
        """A pass of `uid` runs: the poller leaves it alone meanwhile. Yields the resource's lock."""
        with self._lock:
            state = self._states.setdefault(uid, ResourceState())
            state.passes += 1
            state.wakes_seen = state.wakes
        try:
            yield state.lock
        finally:
            with self._lock:
                state.passes -= 1

    def ran(self, uid: str, retry_after: float | None = None, *, generation: int | None = None) -> None:
        """A pass ended; `retry_after`: it did not get through (WML unreachable, or its status not written), and
        the poller tries again after that long. A resource forgotten meanwhile stays forgotten."""
        with self._lock:
            state = self._states.get(uid)
            if state is None:
                return
            state.last_run = time.monotonic()
            if generation is not None:
                state.generation = generation
            if retry_after is None:
                # A Secret that changed (or appeared) while the pass ran may have been read before the change:
                # its wake stands, or a resource Stalled on a missing Secret would wait for it for ever.
                state.dirty = state.wakes != state.wakes_seen
                state.next_attempt = 0.0
            else:
                state.dirty = True
                state.next_attempt = time.monotonic() + retry_after

    def poll_interval(self, body: Mapping[str, Any]) -> float:
        """The age of a deployment list that is recent enough for this resource's pass."""
        status = body.get("status") or {}
        changing = plan.is_changing(status, (body.get("metadata") or {}).get("generation"))
        return plan.poll_interval(body, self.poll_fast, self.poll_slow, changing)

    # --- what passes remember -------------------------------------------------------------------------------

    def _state(self, uid: str) -> ResourceState | None:
        with self._lock:
            return self._states.get(uid)

    def failed(self, uid: str) -> int:
        """One more pass that could not reach WML; returns how many in a row."""
        with self._lock:
            state = self._states.setdefault(uid, ResourceState())
            state.failures += 1
            return state.failures

    def reached(self, uid: str) -> None:
        """A pass got through to WML (or needed not): the backoff starts over."""
        with self._lock:
            state = self._states.get(uid)
            if state is not None:
                state.failures = 0

    def note_created(self, uid: str) -> None:
        with self._lock:
            self._states.setdefault(uid, ResourceState()).created = True

    def made_here(self, uid: str) -> bool:
        state = self._state(uid)
        return bool(state and state.created)

    def set_wml_status(self, uid: str, status: str | None) -> None:
        with self._lock:
            state = self._states.get(uid)
            if state is None or state.wml_status == status:
                return
            old, state.wml_status = state.wml_status, status
        if self._on_status is not None:
            self._on_status(old, status)

    # --- the end ------------------------------------------------------------------------------------------

    def forget(self, uid: str) -> None:
        """The resource is gone: everything held for it goes."""
        with self._lock:
            state = self._states.pop(uid, None)
            if state is None:
                return
            released = self._refer(uid, state, frozenset())
        self._released(released)
        if state.wml_status is not None and self._on_status is not None:
            self._on_status(state.wml_status, None)

    def sizes(self) -> dict[str, int]:
        """How many entries each table holds (what a leak would grow)."""
        with self._lock:
            return {"resources": len(self._states), "secret_users": len(self._users)}
