"""The Lease election's rules (wml_operator.leadership) against a fake coordination API and a fake clock."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import os
import signal
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from wml_operator import elected
from wml_operator.leadership import ElectionConfig, Elector, micro_time

WALL = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class FakeLeases:
    """One Lease with a resourceVersion that every write bumps; a stale write gets 409, as from the apiserver."""

    def __init__(self) -> None:
        self.body: dict[str, Any] | None = None
        self.versions = itertools.count(1)
        self.down = False

    def _lease(self) -> SimpleNamespace:
        assert self.body is not None
        spec = self.body["spec"]
        return SimpleNamespace(
            metadata=SimpleNamespace(resource_version=self.body["metadata"]["resourceVersion"]),
            spec=SimpleNamespace(holder_identity=spec.get("holderIdentity"),
                                 lease_duration_seconds=spec.get("leaseDurationSeconds"),
                                 # the client parses MicroTimes into datetimes
                                 acquire_time=datetime.datetime.strptime(spec["acquireTime"], "%Y-%m-%dT%H:%M:%S.%f%z")
                                 if spec.get("acquireTime") else None,
                                 lease_transitions=spec.get("leaseTransitions")))

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> SimpleNamespace:
        if self.down:
            raise ConnectionRefusedError
        if self.body is None:
            raise ApiException(status=404, reason="Not Found")
        return self._lease()

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any], **_: Any) -> SimpleNamespace:
        if self.body is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        self.body = {**body, "metadata": {**body["metadata"], "resourceVersion": str(next(self.versions))}}
        return self._lease()

    def replace_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any], **_: Any) -> SimpleNamespace:
        if self.down:
            raise ConnectionRefusedError
        assert self.body is not None
        if body["metadata"]["resourceVersion"] != self.body["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self.body = {**body, "metadata": {**body["metadata"], "resourceVersion": str(next(self.versions))}}
        return self._lease()

    @property
    def holder(self) -> str | None:
        return None if self.body is None else self.body["spec"].get("holderIdentity")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def elector(api: FakeLeases, clock: Clock, identity: str) -> Elector:
    return Elector(api, ElectionConfig(namespace="ns", name="lease", identity=identity),  # type: ignore[arg-type]
                   clock=clock, wall=lambda: WALL)


def test_the_first_candidate_creates_the_lease_and_the_second_stands_by() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert a.try_acquire_or_renew()
    assert api.holder == "a"
    assert api.body is not None
    assert api.body["spec"]["leaseDurationSeconds"] == 15
    assert not b.try_acquire_or_renew()
    assert a.try_acquire_or_renew()  # renewal
    assert api.holder == "a"


def test_a_standby_takes_over_only_after_the_holder_stopped_renewing_for_the_lease_duration() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    a.try_acquire_or_renew()
    # While a renews every 2 s, b never gets it, however long it watches.
    for _ in range(20):
        clock.now += 2
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    # a dies: b counts from the last change it saw, by its own clock.
    clock.now += 14
    assert not b.try_acquire_or_renew()
    clock.now += 2
    assert b.try_acquire_or_renew()
    assert api.holder == "b"
    assert api.body is not None
    assert api.body["spec"]["leaseTransitions"] == 1


def test_two_standbys_racing_for_an_expired_lease_one_wins() -> None:
    api, clock = FakeLeases(), Clock()
    a, b, c = elector(api, clock, "a"), elector(api, clock, "b"), elector(api, clock, "c")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    c.try_acquire_or_renew()
    clock.now += 16
    # b and c both read the expired Lease before either writes: the second write is stale (409).
    b_read = api.read_namespaced_lease("lease", "ns")
    real_read = api.read_namespaced_lease
    api.read_namespaced_lease = lambda *args, **kw: b_read  # type: ignore[method-assign]
    assert b.try_acquire_or_renew()
    assert not c.try_acquire_or_renew()
    api.read_namespaced_lease = real_read  # type: ignore[method-assign]
    assert api.holder == "b"


def test_release_clears_the_holder_so_a_standby_takes_over_at_once() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert api.holder is None
    assert b.try_acquire_or_renew()  # no wait for the lease duration
    a.release()  # not ours any more: nothing written
    assert api.holder == "b"


def test_the_leader_gives_up_when_it_could_not_renew_for_the_renew_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    api, clock = FakeLeases(), Clock()
    a = elector(api, clock, "a")
    a.try_acquire_or_renew()
    api.down = True
    ticks = 0

    async def sleep_and_tick(_: float) -> None:
        nonlocal ticks
        ticks += 1
        clock.now += 2

    monkeypatch.setattr("wml_operator.leadership.asyncio.sleep", sleep_and_tick)
    asyncio.run(asyncio.wait_for(a.keep(), 5))
    assert not a.leading
    assert ticks == 5  # 10 s of failed renewals at 2 s each, then it gave up


def test_micro_times_always_have_six_fraction_digits() -> None:
    assert micro_time(WALL) == "2026-01-01T00:00:00.000000Z"


@pytest.mark.parametrize("env", [
    {"WML_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": "20"},
    {"WML_OPERATOR_LEADER_ELECTION_RETRY_PERIOD_SECONDS": "10"},
])
def test_settings_refuse_durations_in_the_wrong_order(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from wml_operator.settings import OperatorSettings
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match="retry_period < renew_deadline < lease_seconds"):
        OperatorSettings()


def test_a_renewal_that_hangs_does_not_carry_the_leader_past_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeLeases()
    a = Elector(api, ElectionConfig(namespace="ns", name="lease", identity="a",  # type: ignore[arg-type]
                                    renew_deadline_seconds=0.5, retry_period_seconds=0.01, lease_seconds=1),
                wall=lambda: WALL)
    a.try_acquire_or_renew()
    hung = threading.Event()

    def hang(*_: Any, **__: Any) -> None:
        hung.wait(10)

    monkeypatch.setattr(api, "read_namespaced_lease", hang)
    started = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(a.keep(), 5))
    finally:
        hung.set()
    assert not a.leading
    assert time.monotonic() - started < 2  # the deadline (0.5 s), not the hung call (10 s)


# --- elected.run: signals before kopf's own handlers --------------------------------------------------------------

STANDBY = SimpleNamespace(health_address="127.0.0.1:0")


def real_elector(api: FakeLeases, identity: str) -> Elector:
    return Elector(api, ElectionConfig(namespace="ns", name="lease", identity=identity,  # type: ignore[arg-type]
                                       retry_period_seconds=0.05, renew_deadline_seconds=1, lease_seconds=2),
                   wall=lambda: WALL)


def test_sigterm_while_standing_by_ends_the_process_gently_without_the_operator() -> None:
    api = FakeLeases()
    assert real_elector(api, "other").try_acquire_or_renew()
    ran: list[bool] = []

    async def operator() -> None:
        ran.append(True)

    async def main() -> None:
        asyncio.get_running_loop().call_later(0.3, os.kill, os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(elected.run(STANDBY, operator, real_elector(api, "me")), 10)  # type: ignore[arg-type]

    asyncio.run(main())
    assert ran == []
    assert api.holder == "other"


def test_sigterm_right_after_winning_the_lease_releases_it_without_starting_the_operator() -> None:
    api = FakeLeases()
    me = real_elector(api, "me")
    won = me.acquire

    async def acquire_then_signal() -> None:
        await won()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.1)  # the handler runs: the signal came before the operator started

    me.acquire = acquire_then_signal  # type: ignore[method-assign]
    ran: list[bool] = []

    async def operator() -> None:
        ran.append(True)

    asyncio.run(asyncio.wait_for(elected.run(STANDBY, operator, me), 10))  # type: ignore[arg-type]
    assert ran == []
    assert api.holder is None


def test_sigterm_while_kopf_starts_reaches_kopfs_handler_and_the_lease_is_released() -> None:
    """The window a rollout hits: the pod that has just taken over is stopped while kopf starts, before kopf
    handles signals. The signal is sent again until kopf's handler (installed late here) gets it."""
    api = FakeLeases()
    me = real_elector(api, "me")
    got: list[int] = []

    async def operator() -> None:  # as kopf.operator() does: its own handlers, a moment after it started
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.5)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def kopfs_handler() -> None:
            got.append(signal.SIGTERM)
            stop.set()

        loop.add_signal_handler(signal.SIGTERM, kopfs_handler)
        await asyncio.wait_for(stop.wait(), 5)

    asyncio.run(asyncio.wait_for(elected.run(STANDBY, operator, me), 10))  # type: ignore[arg-type]
    assert got == [signal.SIGTERM]
    assert api.holder is None
    assert not me.leading


def test_a_write_that_wins_after_its_acquire_was_cancelled_is_released() -> None:
    api = FakeLeases()
    slow = threading.Event()
    create = api.create_namespaced_lease

    def slow_create(*args: Any, **kwargs: Any) -> SimpleNamespace:
        slow.wait(5)
        return create(*args, **kwargs)

    api.create_namespaced_lease = slow_create  # type: ignore[method-assign]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
        loop.call_later(0.4, slow.set)  # the write lands after the stop cancelled the acquire
        await asyncio.wait_for(elected.run(STANDBY, lambda: asyncio.sleep(0), real_elector(api, "me")),  # type: ignore[arg-type]
                               10)

    asyncio.run(main())
    assert api.body is not None  # the write did land
    assert api.holder is None  # and was released
