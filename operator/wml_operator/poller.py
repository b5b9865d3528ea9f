"""One poller for every resource, instead of a kopf timer per resource.

A kopf timer per resource at WML_OPERATOR_POLL_FAST_SECONDS (5 s) makes 200 ticks a second at 1,000 resources,
each one an asyncio task's wake-up, kopf's handler machinery and a handler thread, only to find that most
resources are not due (steady ones are due every 30 s): about 13 s of CPU a minute at 1,000 resources with
nothing changing, and a timer task per resource in memory. The poller keeps the latest body of each resource
(fed by the watch kopf already runs), looks once per tick at which are due (Runtime.due: in the event loop,
a few microseconds each), and runs only those passes in kopf's executor, writing their status itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from wml_operator.runtime import Runtime
from wml_operator.secrets import referenced_secrets
from wml_operator.spec import GROUP, parse_spec

log = logging.getLogger(__name__)

# One pass of a due resource: its body in, the status patch to write out (None: nothing to write).
Pass = Callable[[Mapping[str, Any]], dict[str, Any] | None]
# Writes a status merge patch; False when the resource is gone.
WriteStatus = Callable[[str, str, dict[str, Any]], bool]

# Annotations a pass reads are ours; kubectl's last-applied-configuration (a copy of the whole manifest) and
# kopf's bookkeeping are not worth keeping for every resource.
_OUR_ANNOTATIONS = f"{GROUP}/"


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


def _secret_keys(body: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    namespace = (body.get("metadata") or {}).get("namespace") or ""
    try:
        return frozenset((namespace, name) for name in referenced_secrets(parse_spec(body.get("spec"))))
    except ValueError:  # an invalid spec names no Secret it could be woken by; its fix is a spec edit
        return frozenset()


class Poller:
    def __init__(self, runtime: Runtime, run_pass: Pass, write_status: WriteStatus, *, concurrency: int) -> None:
        self.runtime = runtime
        self.run_pass = run_pass
        self.write_status = write_status
        self.concurrency = concurrency
        self.bodies: dict[str, dict[str, Any]] = {}
        # Which resources read which Secret, so that a Secret's change wakes them. Kept here rather than in a
        # kopf index: kopf holds every resource's first handlers until all of its indices are filled, which
        # never happens when there are more resources than settings.queueing.worker_limit (kopf issue #1243).
        self._secrets_of: dict[str, tuple[int | None, frozenset[tuple[str, str]]]] = {}  # uid -> (generation, refs)
        self._users: dict[tuple[str, str], set[str]] = {}  # (namespace, Secret name) -> UIDs
        self.running: set[str] = set()  # UIDs with a poller pass under way
        self.tasks: set[asyncio.Task[None]] = set()
        # kopf.event() posts through the operator's event queue, which kopf names in contextvars of the tasks
        # it runs handlers in; passes run in a copy of that context, taken from the watch handler below.
        self.context: contextvars.Context | None = None

    def track(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Called for every watch event of a StreamingDeployment (in kopf's event loop)."""
        if self.context is None:
            self.context = contextvars.copy_context()
        uid = (body.get("metadata") or {}).get("uid")
        if not uid:
            return
        if event_type == "DELETED":
            self.bodies.pop(uid, None)
            self._refer(uid, None)
            return
        self.bodies[uid] = trimmed(body)
        generation = (body.get("metadata") or {}).get("generation")
        known = self._secrets_of.get(uid)
        if known is None or known[0] != generation:  # the spec changed: parse it again
            self._refer(uid, (generation, _secret_keys(body)))

    def users_of(self, namespace: str, name: str) -> list[str]:
        """The UIDs of the resources whose spec names this Secret."""
        return sorted(self._users.get((namespace, name), ()))

    def _refer(self, uid: str, entry: tuple[int | None, frozenset[tuple[str, str]]] | None) -> None:
        """Notes which Secrets a resource's spec names (None: it is gone)."""
        keys = entry[1] if entry is not None else frozenset()
        _, old = self._secrets_of.pop(uid, (None, frozenset()))
        for key in old - keys:
            users = self._users[key]
            users.discard(uid)
            if not users:
                del self._users[key]
        for key in keys:
            self._users.setdefault(key, set()).add(uid)
        if entry is not None:
            self._secrets_of[uid] = entry

    def due(self) -> list[dict[str, Any]]:
        """The bodies whose pass is due now, at most as many as may start."""
        room = self.concurrency - len(self.running)
        picked: list[dict[str, Any]] = []
        for uid, body in self.bodies.items():
            if len(picked) >= room:
                break
            if uid in self.running or body["metadata"].get("deletionTimestamp"):
                continue  # deletion belongs to kopf's delete handler
            if self.runtime.due(uid, body):
                picked.append(body)
        return picked

    async def run(self, executor: Executor | None) -> None:
        """Forever, until cancelled: every tick, start the due passes."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                for body in self.due():
                    uid = body["metadata"]["uid"]
                    self.running.add(uid)
                    task = loop.create_task(self._pass(loop, executor, body))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
            except Exception:  # never let one bad tick end polling for every resource
                log.exception("the poller's tick failed; polling goes on")
            await asyncio.sleep(self.runtime.tick)

    async def _pass(self, loop: asyncio.AbstractEventLoop, executor: Executor | None, body: dict[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        try:
            context = self.context or contextvars.copy_context()
            await loop.run_in_executor(executor, context.copy().run, self._pass_and_write, body)
        except Exception:
            log.exception("poll of %s/%s failed; it is retried", body["metadata"].get("namespace"),
                          body["metadata"].get("name"))
            self.runtime.ran(uid, retry_after=self.runtime.settings.poll_fast)
        finally:
            self.running.discard(uid)

    def _pass_and_write(self, body: dict[str, Any]) -> None:
        status = self.run_pass(body)
        if status:
            meta = body["metadata"]
            self.write_status(meta["namespace"], meta["name"], status)
