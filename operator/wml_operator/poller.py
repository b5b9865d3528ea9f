"""One poller for every resource, instead of a kopf timer per resource.

A kopf timer per resource at WML_OPERATOR_POLL_FAST_SECONDS (5 s) makes 200 ticks a second at 1,000 resources,
each one an asyncio task's wake-up, kopf's handler machinery and a handler thread, only to find that most
resources are not due (steady ones are due every 30 s). The poller looks once per tick at which resources are
due (Resources.due, on the bodies the watch keeps there: in the event loop, a few microseconds each), and runs
only those passes in kopf's executor; each pass writes its own status.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from wml_operator.resources import Resources

log = logging.getLogger(__name__)

# One pass of a due resource, its status written; raises when it could not be done.
Pass = Callable[[Mapping[str, Any]], None]


class Poller:
    def __init__(self, resources: Resources, run_pass: Pass, *, concurrency: int) -> None:
        self.resources = resources
        self.run_pass = run_pass
        self.concurrency = concurrency
        self.running: set[str] = set()  # UIDs with a poller pass under way
        self.tasks: set[asyncio.Task[None]] = set()
        # kopf.event() posts through the operator's event queue, which kopf names in contextvars of the tasks
        # it runs handlers in; passes run in a copy of that context, taken from a watch handler (see `seen`).
        self.context: contextvars.Context | None = None

    def seen(self) -> None:
        """Called from kopf's watch handlers, in kopf's event loop: the context passes run in."""
        if self.context is None:
            self.context = contextvars.copy_context()

    def due(self) -> list[dict[str, Any]]:
        """The bodies whose pass is due now, at most as many as may start."""
        room = self.concurrency - len(self.running)
        picked: list[dict[str, Any]] = []
        for body in self.resources.bodies():
            if len(picked) >= room:
                break
            uid = body["metadata"]["uid"]
            if uid in self.running or body["metadata"].get("deletionTimestamp"):
                continue  # deletion belongs to kopf's delete handler
            if self.resources.due(uid, body):
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
            await asyncio.sleep(self.resources.tick)

    async def stop(self, task: asyncio.Task[None], timeout: float = 10) -> None:
        """Stops `task` (this poller's run()); the passes under way finish and write what they found."""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)

    async def _pass(self, loop: asyncio.AbstractEventLoop, executor: Executor | None, body: dict[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        try:
            context = self.context or contextvars.copy_context()
            await loop.run_in_executor(executor, context.copy().run, self.run_pass, body)
        except Exception:
            log.exception("poll of %s/%s failed; it is retried", body["metadata"].get("namespace"),
                          body["metadata"].get("name"))
            self.resources.ran(uid, retry_after=self.resources.poll_fast)
        finally:
            self.running.discard(uid)
