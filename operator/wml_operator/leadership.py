"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it (issue 20).

Two replicas run; one holds the Lease and runs everything (kopf, the poller, the Secret watch, the sweep), the
other runs nothing but its /healthz until the Lease is free or expired. Election gates the whole process, not
only kopf's handlers: kopf's own peering pauses handlers but would leave our threads and tasks running in the
standby (docs/ARCHITECTURE.md, "High availability").

The rules are client-go's: a standby takes the Lease when its holder has not renewed it for leaseDuration, as
timed by the standby's own clock from when it last saw the record change (no trust in the other's clock); the
leader renews every retryPeriod and gives up when no renewal succeeded for renewDeadline (the caller then exits
the process, as controller-runtime does: a leader that lost the Lease must stop acting before another starts);
a leader that stops cleanly releases the Lease (holder cleared) so the standby takes over at its next try.
Every write carries the resourceVersion read: of two racing candidates, the apiserver lets one win.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0


def micro_time(at: datetime.datetime) -> str:
    """A MicroTime as the apiserver parses it: exactly six fraction digits (isoformat drops them at .000000)."""
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """One candidate. `try_acquire_or_renew` is one step, synchronous (tests drive it with a fake API and clock);
    `acquire` and `keep` are the loops the process runs around it."""

    def __init__(self, api: k8s.CoordinationV1Api, config: ElectionConfig,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)) -> None:
        # Any: bodies go as dicts, to write MicroTimes the apiserver parses (micro_time); the stubs want V1Lease.
        self.api: Any = api
        self.config = config
        self.clock = clock
        self.wall = wall
        # What we last saw of the Lease (its resourceVersion) and when, by our own clock.
        self._observed: str | None = None
        self._observed_at = 0.0
        self.leading = False
        self.last_renewed = 0.0  # our clock, at our last successful write as holder
        # Blocking API calls run here, not in the loop's or kopf's executor, which a busy operator may fill.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="leader-election")

    def _timeout(self) -> float:
        return max(1.0, min(5.0, self.config.renew_deadline_seconds / 2))

    def _spec(self, acquire_time: str, transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self.config.identity,
                "leaseDurationSeconds": max(1, round(self.config.lease_seconds)),
                "acquireTime": acquire_time, "renewTime": micro_time(self.wall()),
                "leaseTransitions": transitions}

    def try_acquire_or_renew(self) -> bool:
        """True when we hold the Lease after this step. API errors count as 'not this time' (logged)."""
        cfg = self.config
        now = self.clock()
        try:
            lease = self.api.read_namespaced_lease(cfg.name, cfg.namespace, _request_timeout=self._timeout())
        except ApiException as exc:
            if exc.status != 404:
                log.warning("cannot read the Lease %s/%s: %s %s", cfg.namespace, cfg.name, exc.status, exc.reason)
                return False
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                    "spec": self._spec(micro_time(self.wall()), 0)}
            return self._write(lambda: self.api.create_namespaced_lease(
                cfg.namespace, body, _request_timeout=self._timeout()), now)
        except Exception as exc:  # connection refused, timeout: the apiserver is away
            log.warning("cannot read the Lease %s/%s: %s", cfg.namespace, cfg.name, type(exc).__name__)
            return False
        spec = lease.spec
        holder = spec.holder_identity or ""
        version = lease.metadata.resource_version
        if version != self._observed:
            self._observed, self._observed_at = version, now
        ours = holder == cfg.identity
        if holder and not ours:
            duration = spec.lease_duration_seconds or cfg.lease_seconds
            if now < self._observed_at + duration:
                return False  # held, and renewed within its duration as far as we have seen
            log.info("the Lease %s/%s of %s expired; taking it", cfg.namespace, cfg.name, holder)
        acquired = spec.acquire_time if ours and spec.acquire_time else self.wall()
        transitions = (spec.lease_transitions or 0) + (0 if ours else 1)
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace, "resourceVersion": version},
                "spec": self._spec(micro_time(acquired), transitions)}
        return self._write(lambda: self.api.replace_namespaced_lease(
            cfg.name, cfg.namespace, body, _request_timeout=self._timeout()), now)

    def _write(self, call: Callable[[], Any], now: float) -> bool:
        try:
            written = call()
        except ApiException as exc:
            if exc.status != 409:  # 409: another candidate wrote first; it leads
                log.warning("cannot write the Lease %s/%s: %s %s", self.config.namespace, self.config.name,
                            exc.status, exc.reason)
            return False
        except Exception as exc:
            log.warning("cannot write the Lease %s/%s: %s", self.config.namespace, self.config.name,
                        type(exc).__name__)
            return False
        self._observed, self._observed_at = written.metadata.resource_version, now
        self.leading, self.last_renewed = True, now
        return True

    def release(self) -> None:
        """Clears the holder (client-go's ReleaseOnCancel), so a standby takes over at its next retry instead of
        after leaseDuration. Only when we hold it; one quick try: a failure costs the standby leaseDuration."""
        if not self.leading:
            return
        self.leading = False
        cfg = self.config
        try:
            lease = self.api.read_namespaced_lease(cfg.name, cfg.namespace, _request_timeout=2)
            if lease.spec.holder_identity != cfg.identity:
                return
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace,
                                 "resourceVersion": lease.metadata.resource_version},
                    "spec": {"holderIdentity": None, "leaseDurationSeconds": 1,
                             "renewTime": micro_time(self.wall()),
                             "leaseTransitions": lease.spec.lease_transitions or 0}}
            self.api.replace_namespaced_lease(cfg.name, cfg.namespace, body, _request_timeout=2)
            log.info("released the Lease %s/%s", cfg.namespace, cfg.name)
        except Exception as exc:
            log.warning("cannot release the Lease %s/%s: %s", cfg.namespace, cfg.name, type(exc).__name__)

    async def resign(self) -> None:
        """release(), after any step still under way (a cancelled acquire's or keep's write may yet succeed):
        the same single thread runs them in order, so a Lease that step wins is released too."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self.release)

    async def _step(self) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.try_acquire_or_renew)

    async def acquire(self) -> None:
        """Returns once we hold the Lease; tries every retryPeriod."""
        log.info("standing by for the Lease %s/%s as %s", self.config.namespace, self.config.name,
                 self.config.identity)
        while not await self._step():
            await asyncio.sleep(self.config.retry_period_seconds)
        log.info("acquired the Lease %s/%s as %s", self.config.namespace, self.config.name, self.config.identity)

    async def keep(self) -> None:
        """Renews every retryPeriod; returns when no renewal succeeded for renewDeadline: leadership is lost."""
        while True:
            await asyncio.sleep(self.config.retry_period_seconds)
            # A step may hang on a partitioned network (a read and a write, each up to its timeout): it must not
            # carry us past the deadline, or a standby could lead (after leaseDuration) while we still act.
            left = self.config.renew_deadline_seconds - (self.clock() - self.last_renewed)
            try:
                renewed = await asyncio.wait_for(self._step(), timeout=max(0.0, left))
            except TimeoutError:
                renewed = False
            if not renewed and self.clock() - self.last_renewed >= self.config.renew_deadline_seconds:
                self.leading = False
                log.error("lost the Lease %s/%s: not renewed for %.0f s", self.config.namespace, self.config.name,
                          self.clock() - self.last_renewed)
                return
