"""The stream engine: which deployments run, their status, and the threads that run them.

Two modes, a setting of the service (`run_streams`):
- `Engine()` runs every started deployment on Kafka, one thread per deployment.
- `Engine(run_streams=False)`, "accept only": deployments are accepted and reported RUNNING or STOPPED
  without any Kafka client. The operator's benchmarks use it to hold 1,000 deployments on one machine;
  it is also how to try the API without a broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from wml_server.engine.clients import ClientFactory, KafkaClients
from wml_server.engine.metrics import EngineMetrics
from wml_server.engine.options import StreamOptions
from wml_server.engine.position import StreamProgress
from wml_server.engine.runner import StreamRunner
from wml_server.engine.spec import StreamSpec
from wml_server.engine.state import (
    INITIALIZING,
    RUNNING,
    STOPPED,
    Errors,
    StatusCallback,
    StreamCounts,
    StreamState,
)

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    """One deployment the engine knows. `runner` is the only runner whose reports count."""

    status: str = STOPPED  # until its first start
    errors: Errors = field(default_factory=list)
    runner: StreamRunner | None = None
    counts: StreamCounts = field(default_factory=StreamCounts)
    progress: StreamProgress = field(default_factory=StreamProgress)
    notify: bool = True
    # Held while a status is recorded and announced, so announcements keep the order of the changes.
    report_lock: threading.RLock = field(default_factory=threading.RLock)


class Engine:
    """Thread-safe manager of stream deployments.

    `on_status_change(deployment_id, status, errors)` is called on every status change, from the engine's
    threads (or the caller's, in accept-only mode), in order for each deployment. It must not call back into
    start/stop/remove/shutdown; it is meant to persist the status. Exceptions it raises are logged.
    """

    def __init__(self, *, on_status_change: StatusCallback | None = None, run_streams: bool = True,
                 registry: CollectorRegistry | None = None, options: StreamOptions | None = None,
                 clients: ClientFactory | None = None) -> None:
        self.run_streams = run_streams
        self.options = options or StreamOptions()
        self.metrics = EngineMetrics(registry)
        self._callback = on_status_change
        self._clients: ClientFactory = clients or KafkaClients()
        self._slots: dict[str, _Slot] = {}
        # Runners of removed deployments that had not finished: a re-created deployment waits for them.
        self._retiring: dict[str, StreamRunner] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closed = False

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def start(self, spec: StreamSpec) -> None:
        """Starts (or resumes) a deployment and returns at once; its status is INITIALIZING from now.

        A deployment already running is left alone, even with a different spec: stop it first to change it.
        A runner of it still stopping is waited for by the new one (never two on one transactional id).
        """
        deployment_id = spec.deployment_id
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine is shut down")
            slot = self._slots.setdefault(deployment_id, _Slot())
            current = slot.runner
            if current is not None and current.alive and not current.stopping:
                return
            runner: StreamRunner | None = None
            if self.run_streams:
                self._retiring = {k: r for k, r in self._retiring.items() if r.alive}
                predecessor = current if current is not None and current.alive else self._retiring.pop(
                    deployment_id, None)
                runner = StreamRunner(spec, self._report, metrics=self.metrics, counts=slot.counts,
                                      options=self.options, clients=self._clients, predecessor=predecessor,
                                      progress=slot.progress)
                self.metrics.track(deployment_id)
            slot.runner = runner
        if runner is None:
            self._set(deployment_id, slot, RUNNING, [], expect=None)
            return
        # Announced before the thread starts, so it cannot overtake the runner's own RUNNING or FAILED.
        self._set(deployment_id, slot, INITIALIZING, [], expect=runner)
        runner.start()

    def stop(self, deployment_id: str, timeout: float = 10.0) -> bool:
        """Stops a deployment after its batch in flight commits; waits up to `timeout` s for it to finish.

        True when it has stopped (its clients are closed); False when it is still finishing, in which case
        it reports STOPPED (or FAILED) by itself when done. Unknown deployments count as stopped.
        """
        with self._lock:
            slot = self._slots.get(deployment_id)
            runner = slot.runner if slot is not None else None
        if slot is None:
            return True
        if runner is not None:
            runner.request_stop()  # also when its thread is about to start: it will stop at once
            if not runner.join(timeout):
                return False
        # The runner has reported its last status; a FAILED one the user asked to stop is STOPPED now.
        self._set(deployment_id, slot, STOPPED, [], expect=runner)
        return True

    def remove(self, deployment_id: str, timeout: float = 10.0) -> bool:
        """Stops a deployment and forgets it: no more status changes are announced for it."""
        with self._lock:
            slot = self._slots.pop(deployment_id, None)
            self._changed.notify_all()
        if slot is None:
            return True
        with slot.report_lock:
            slot.notify = False
        runner = slot.runner
        done = True
        if runner is not None:
            runner.request_stop()
            done = runner.join(timeout)
            if not done:
                with self._lock:
                    self._retiring[deployment_id] = runner  # a re-created deployment will wait for it
        self.metrics.forget(deployment_id)  # after the join: its last commit counts records too
        return done

    def join_retired(self, deployment_id: str, timeout: float) -> bool:
        """Waits for the runner of a removed deployment that was still finishing; True once none is left."""
        with self._lock:
            runner = self._retiring.get(deployment_id)
        return runner is None or runner.join(timeout)

    def status(self, deployment_id: str) -> StreamState | None:
        with self._lock:
            slot = self._slots.get(deployment_id)
            if slot is None:
                return None
            status, errors = slot.status, list(slot.errors)
        records_in, records_out, errored = slot.counts.snapshot()
        return StreamState(status, errors, records_in, records_out, errored, slot.progress.position(),
                           slot.progress.lag)

    def scoring_pids(self, deployment_id: str) -> list[int]:
        """The process ids of a running stream's scoring workers (none while it scores in this process)."""
        with self._lock:
            slot = self._slots.get(deployment_id)
            runner = slot.runner if slot is not None else None
        return runner.scoring_pids() if runner is not None else []

    def deployments(self) -> list[str]:
        with self._lock:
            return list(self._slots)

    def wait_for(self, deployment_id: str, statuses: Iterable[str], timeout: float) -> StreamState | None:
        """Waits until the deployment has one of `statuses`; its state then, or the last one seen on timeout."""
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                slot = self._slots.get(deployment_id)
                if slot is not None and slot.status in wanted:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
        return self.status(deployment_id)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stops every deployment (service exit). Their STOPPED is not announced: what a user wanted RUNNING
        resumes at the next start, so the stored status must not change on the way down."""
        with self._lock:
            self._closed = True
            slots = list(self._slots.values())
            runners = [s.runner for s in slots if s.runner is not None] + list(self._retiring.values())
        for slot in slots:
            with slot.report_lock:
                slot.notify = False
        for runner in runners:
            runner.request_stop()
        deadline = time.monotonic() + timeout
        for runner in runners:
            if not runner.join(max(0.0, deadline - time.monotonic())):
                log.warning("stream %s did not stop within %g s", runner.spec.deployment_id, timeout)

    # -- status reports ------------------------------------------------------------------------------------

    def _report(self, runner: StreamRunner, status: str, errors: Errors) -> None:
        with self._lock:
            slot = self._slots.get(runner.spec.deployment_id)
        if slot is not None:
            self._set(runner.spec.deployment_id, slot, status, errors, expect=runner)

    def _set(self, deployment_id: str, slot: _Slot, status: str, errors: Errors, *,
             expect: StreamRunner | None) -> None:
        """Records and announces a status, unless `expect` is no longer the deployment's runner."""
        with slot.report_lock:
            with self._lock:
                if slot.runner is not expect:
                    return  # superseded: a newer start or stop speaks for the deployment now
                changed = (slot.status, slot.errors) != (status, errors)
                slot.status, slot.errors = status, list(errors)
                self._changed.notify_all()
            if not (changed and slot.notify and self._callback):
                return
            try:
                self._callback(deployment_id, status, list(errors))
            except Exception:
                log.exception("on_status_change failed for deployment %s (%s)", deployment_id, status)
