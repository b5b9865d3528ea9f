"""The process under leader election: /healthz while standing by, everything else only while leading.

`python -m wml_operator` calls `run` when WML_OPERATOR_LEADER_ELECTION is on (wml_operator.leadership has the
rules). Nothing of the operator is built or started before the Lease is ours: not kopf, not OperatorApp's
threads and tasks. Losing the Lease ends the process at once (exit 1; the kubelet restarts it as a standby);
kopf stopping on SIGTERM releases the Lease after kopf's cleanup, so the standby starts after ours stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

import aiohttp.web
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from wml_operator.leadership import ElectionConfig, Elector
from wml_operator.settings import OperatorSettings

log = logging.getLogger(__name__)
LOST_EXIT_CODE = 1


def identity() -> str:
    """The pod's name (its hostname) and the pid: unique among replicas, and between two runs on one host."""
    return f"{socket.gethostname()}_{os.getpid()}"


def election_config(settings: OperatorSettings) -> ElectionConfig:
    return ElectionConfig(namespace=settings.pod_namespace, name=settings.leader_election_lease,
                          identity=identity(), lease_seconds=settings.leader_election_lease_seconds,
                          renew_deadline_seconds=settings.leader_election_renew_deadline_seconds,
                          retry_period_seconds=settings.leader_election_retry_period_seconds)


def coordination_api() -> k8s.CoordinationV1Api:
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    return k8s.CoordinationV1Api()


async def standby_health(address: str) -> aiohttp.web.AppRunner:
    """/healthz while standing by: the liveness probe must not kill a standby (kopf serves it once leading)."""
    async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"standby": True})

    app = aiohttp.web.Application()
    app.router.add_get("/healthz", healthz)
    runner = aiohttp.web.AppRunner(app, handle_signals=False)
    await runner.setup()
    host, _, port = address.rpartition(":")
    await aiohttp.web.TCPSite(runner, host or None, int(port), reuse_address=True).start()
    return runner


def _lost() -> None:
    """Leadership lost: another replica may lead within seconds, so nothing of ours may act any more. No cleanup
    (it would act): exit now, as controller-runtime does."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(LOST_EXIT_CODE)


async def until_stopped(work: Awaitable[None], stopping: asyncio.Event) -> bool:
    """Runs `work` unless `stopping` is set first (then cancels it): whether it finished."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done() and not stopping.is_set():
        task.result()
        return True
    task.cancel()
    return False


async def run(settings: OperatorSettings, operator: Callable[[], Awaitable[None]],
              elector: Elector | None = None) -> None:
    """Stands by until elected, then runs `operator()` (kopf, which builds the app) while the Lease is kept.

    SIGTERM and SIGINT are ours until kopf puts its own handlers in their place. Without that, a signal while
    standing by killed the process by its default, and one between winning the Lease and kopf's start (a rollout
    stopping the pod that has just taken over) ended it with the Lease held: the next leader waited out its whole
    duration. Now a standby stops at once, and a signal during kopf's start is sent again until kopf's handler
    has it, so kopf stops gently and the Lease is released. (kopf's `stop_flag` would do it too, but kopf then
    waits 5 s at every stop for that flag's waiter, which nothing cancels.)
    """
    elector = elector or Elector(coordination_api(), election_config(settings))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    kopf_starting = False

    def on_signal(signum: int) -> None:
        stopping.set()
        if kopf_starting:  # kopf's handler replaces this one once it is in place; it gets the signal then
            loop.call_later(0.1, os.kill, os.getpid(), signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    health = await standby_health(settings.health_address)
    try:
        elected = await until_stopped(elector.acquire(), stopping)
    finally:
        await health.cleanup()  # kopf's liveness endpoint takes the address over
    if not elected or stopping.is_set():
        await elector.resign()  # a write of the cancelled try may have won the Lease after all
        log.info("stopped before leading")
        return
    keeper = asyncio.create_task(elector.keep(), name="leader-election")
    keeper.add_done_callback(lambda task: None if task.cancelled() else _lost())
    kopf_starting = True
    try:
        await operator()
    finally:
        keeper.cancel()
        await elector.resign()
