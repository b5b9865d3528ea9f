"""The operator killed with kill -9 at random points of its work: while it creates a resource's deployment,
starts or stops one, re-creates one after a spec change, and deletes one (finalizer).

One accept-only WML service behind a FaultProxy (so the test sees every WML call the operator makes, with
its arrival time), one operator process watching the case's namespace. A few resources stay alive across
trials, so every change has a target. Each trial: one operation applied with kubectl, a kill -9 of the
operator at a point chosen with a seeded random.Random, a restart, then the namespace must converge:
Ready for its generation, exactly one WML deployment per resource built from its current spec and in its
declared state, nothing left of a deleted resource (0 duplicates, 0 orphans, 0 stuck).

Where the kill lands, three ways (`strategy`):
- delay:   a random delay of 0 to 1.5 s after kubectl starts (kubectl runs beside it): before the change
           reaches the operator, before, during or after its WML calls, or after it settled;
- at-call: the moment the proxy has answered the operation's n-th WML write (POST, PATCH or DELETE of a
           deployment): the window between a change in WML and the status write that records it;
- slowed:  every WML request held 0.3 s by the proxy, kill 0.2 to 1.1 s after kubectl starts: often while a
           call is in flight (the proxy forwards it all the same, as a real network would; the restart waits
           for the held requests to land first, as any real restart takes longer than that).
`kill_point` says what actually happened, from the proxy's record and the resource read right after the kill:
before-call (no WML write yet), during-call (a write sent, not answered), between-calls (recreate: stopped or
created, the old one not yet deleted), after-call (WML changed, the status does not say so yet), after-status
(the status says so, not yet Ready), settled (Ready for its generation, or the resource gone).

WSO_KILL9_SEED=<n> repeats a run's choices (timings differ, so the kill points may too); a failing trial
prints the seed, the operation, the strategy, the delay, the kill point, the WML writes and the Convergence.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from kubernetes import client as k8s

from tests.conftest import Figures
from tests.e2e.conftest import StreamEnv, create_secrets
from tests.reliability.checks import (
    GROUP,
    PLURAL,
    VERSION,
    Convergence,
    condition,
    list_sdeps,
    wait_converged,
    wml_client,
)
from tests.reliability.conftest import count
from wml_localplatform import process
from wml_localplatform.faultproxy import FaultProxy, Seen
from wml_localplatform.wmloperator import WMLOperator
from wml_localplatform.wmlservice import WMLService

Kubectl = Callable[..., Any]

OPERATIONS = ("create", "flip", "recreate", "delete")
STRATEGIES = (("delay", 0.5), ("at-call", 0.3), ("slowed", 0.2))
MAX_DELAY = 1.5  # seconds after kubectl started
SLOW = 0.3  # seconds the proxy holds each request under the `slowed` strategy
MIN_ALIVE, MAX_ALIVE = 1, 8
CALLS = {"POST": "create", "PATCH": "set-state", "DELETE": "delete"}  # the WML writes, by method


@dataclass
class Want:
    state: str
    topic: str


@dataclass
class Trial:
    number: int
    operation: str
    target: str
    strategy: str
    delay: float | None = None  # delay, slowed: seconds from kubectl's start to the kill
    call: int | None = None  # at-call: after which WML write
    kill_point: str = ""
    writes: list[str] = field(default_factory=list)  # the WML writes since kubectl started: "+s call status"
    creates: int = 0
    state: Convergence | None = None
    start_s: float = 0.0
    recovery_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    def report(self, seed: int) -> str:
        how = (f"after WML write {self.call}" if self.strategy == "at-call"
               else f"{self.delay:.3f} s after kubectl started")
        return (f"seed {seed} trial {self.number}: {self.operation} {self.target}, strategy {self.strategy} "
                f"(kill {how}), kill point {self.kill_point}; WML writes {self.writes}; "
                f"restart {self.start_s:.1f} s, waited {self.recovery_s:.1f} s; {self.state}; problems: "
                f"{self.problems}")


def writes_since(proxy: FaultProxy, since: float) -> list[Seen]:
    # A dry run (the check before a re-create) writes nothing.
    return [s for s in proxy.requests(since=since)
            if s.method in CALLS and "/deployments" in s.path and "dry_run" not in s.path]


def get_sdep(k8s_api: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj = k8s.CustomObjectsApi(k8s_api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return cast(dict[str, Any], obj)


def written(obj: dict[str, Any] | None, operation: str, want: Want | None, old_hash: str | None) -> str | None:
    """What the killed operator had written of the operation: "settled" (the resource gone, or Ready for its
    generation), "after-status" (its status records the WML side as the spec wants it), or None."""
    if obj is None:
        return "settled" if operation == "delete" else None
    status = obj.get("status", {})
    ready = condition(obj, "Ready")
    if (operation != "delete" and ready is not None and ready["status"] == "True"
            and status.get("observedGeneration") == obj["metadata"]["generation"]):
        return "settled"
    if want is None or status.get("wmlStatus") != want.state or not status.get("deploymentId"):
        return None
    return None if operation == "recreate" and status.get("specHash") == old_hash else "after-status"


def gone(op: WMLOperator, timeout: float = 30.0) -> None:
    """Waits until the killed process has let go of its health port. kill() returns once the main thread is
    a zombie, while its other threads may still be exiting with the process's sockets open: a start() then
    would take the old listener for the new operator's and return before that one is up."""
    deadline = time.monotonic() + timeout
    while process.port_open(op.health_port):
        assert time.monotonic() < deadline, f"the killed operator still holds port {op.health_port}"
        time.sleep(0.01)


def next_operation(rng: random.Random, left: dict[str, int], alive: int) -> str:
    """Each kind as often as the others over the run; creates and deletes keep MIN..MAX resources alive."""
    feasible = [kind for kind, n in left.items() if n > 0
                and not (kind == "delete" and alive <= MIN_ALIVE) and not (kind == "create" and alive >= MAX_ALIVE)]
    kind = rng.choice(feasible or ["flip"])
    left[kind] = max(0, left[kind] - 1)
    return kind


@pytest.mark.timeout(count(1800, 300))
def test_operator_kill9(fault_namespace: str, k8s_api: k8s.ApiClient, kubectl: Kubectl,
                        make_wml_service: Callable[..., WMLService],
                        fault_proxy: Callable[[WMLService], FaultProxy],
                        start_operator: Callable[..., WMLOperator], figures: Figures) -> None:
    ns = fault_namespace
    seed = int(os.environ.get("WSO_KILL9_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)  # noqa: S311 - choices of a test, not crypto
    trials = count(100, 8)
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false", WML_SERVER_DEPLOYMENT_LIMIT="1000")
    proxy = fault_proxy(service)
    user = service.add_user()
    create_secrets(k8s_api, ns, proxy.url, user, None)
    env = StreamEnv(ns, "in", "out", user, service, None)  # type: ignore[arg-type]
    wml = wml_client(service, user)
    op = start_operator(ns)
    serial = 0
    alive: dict[str, Want] = {}

    def manifest(name: str, want: Want) -> str:
        body = json.loads(env.manifest(name=name, state=want.state))
        body["spec"]["output"]["topic"] = want.topic
        return json.dumps(body)

    def patch(name: str, spec: dict[str, Any]) -> tuple[str, ...]:
        return ("patch", "sdep", name, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec}))

    for _ in range(3):
        serial += 1
        alive[f"k{serial}"] = Want(rng.choice(["RUNNING", "STOPPED"]), f"out-{serial}")
        kubectl("apply", "-f", "-", input=manifest(f"k{serial}", alive[f"k{serial}"]))
    state, _ = wait_converged(k8s_api, ns, service, user, timeout=120)
    assert state.ok, f"seed {seed}: the first resources never converged: {state}"

    left = {kind: trials // len(OPERATIONS) + (1 if i < trials % len(OPERATIONS) else 0)
            for i, kind in enumerate(OPERATIONS)}
    done: list[Trial] = []
    pool = ThreadPoolExecutor(1)
    try:
        for number in range(1, trials + 1):
            operation = next_operation(rng, left, len(alive))
            strategy = rng.choices([s for s, _ in STRATEGIES], weights=[w for _, w in STRATEGIES])[0]
            if operation == "create":
                serial += 1
                target = f"k{serial}"
            else:
                target = rng.choice(sorted(alive))
            trial = Trial(number, operation, target, strategy)
            done.append(trial)
            state_of_new = rng.choice(["RUNNING", "STOPPED"])
            # How many WML writes the operation takes: a create is one POST (STOPPED ones too: created stopped); a
            # recreate hands over: PATCH STOPPED (of a running one), POST, DELETE.
            calls = 1
            if operation == "recreate":
                calls = 3 if alive[target].state == "RUNNING" else 2
            if strategy == "at-call":
                trial.call = rng.randint(1, calls)
            elif strategy == "delay":
                trial.delay = MAX_DELAY * rng.random()
            else:
                trial.delay = 0.2 + 3 * SLOW * rng.random()

            if strategy == "slowed":
                proxy.slow(SLOW)
            if operation == "create":
                alive[target] = Want(state_of_new, f"out-{serial}")
                args: tuple[str, ...] = ("apply", "-f", "-")
            elif operation == "flip":
                alive[target].state = "STOPPED" if alive[target].state == "RUNNING" else "RUNNING"
                args = patch(target, {"state": alive[target].state})
            elif operation == "recreate":
                serial += 1
                alive[target].topic = f"out-{serial}"
                args = patch(target, {"output": {"topic": alive[target].topic}})
            else:
                del alive[target]
                args = ("delete", "sdep", target, "-n", ns, "--wait=false")
            old_hash = (get_sdep(k8s_api, ns, target) or {}).get("status", {}).get("specHash")
            started = time.monotonic()
            # kubectl runs beside the kill: a short delay kills the operator before the change reaches it.
            applied = pool.submit(kubectl, *args, input=manifest(target, alive[target]) if operation == "create"
                                  else None)
            if trial.call is not None:
                deadline = time.monotonic() + 30
                while len(writes_since(proxy, started)) < trial.call and time.monotonic() < deadline:
                    time.sleep(0.005)
            else:
                assert trial.delay is not None
                time.sleep(max(0.0, started + trial.delay - time.monotonic()))
            answered = {(s.at, s.method, s.path) for s in writes_since(proxy, started)}
            killed = time.monotonic()
            op.kill()
            gone(op)
            applied.result()
            recorded = written(get_sdep(k8s_api, ns, target), operation, alive.get(target), old_hash)
            if strategy == "slowed":
                proxy.clear()
                time.sleep(max(0.0, killed + SLOW + 0.1 - time.monotonic()))  # held requests land first
            trial.start_s = op.start()
            trial.state, _ = wait_converged(k8s_api, ns, service, user, timeout=120)
            trial.recovery_s = time.monotonic() - killed

            writes = writes_since(proxy, started)
            trial.writes = [f"+{s.at - started:.3f}s {CALLS[s.method]} {s.status}"
                            + ("" if s.at < killed else " (after restart)") for s in writes]
            trial.creates = sum(1 for s in writes if s.method == "POST")
            before = [s for s in writes if s.at < killed]
            in_flight = [s for s in before if (s.at, s.method, s.path) not in answered]
            trial.kill_point = recorded or ("during-call" if in_flight
                                            else "between-calls" if operation == "recreate" and 0 < len(before) < calls
                                            else "after-call" if before else "before-call")

            if not trial.state.ok:
                trial.problems.append("did not converge")
            names = {o["metadata"]["name"] for o in list_sdeps(k8s_api, ns)}
            if names != set(alive):
                trial.problems.append(f"resources {sorted(names)}, expected {sorted(alive)}")
            deployments = wml.list_instance_deployments()
            for name, want in alive.items():
                mine = [d for d in deployments if d.entity.name == f"{ns}/{name}"]
                if len(mine) != 1:
                    trial.problems.append(f"{name}: {len(mine)} WML deployments")
                    continue
                topic = mine[0].entity.output.target.topic if mine[0].entity.output else None
                if (mine[0].status, topic) != (want.state, want.topic):
                    trial.problems.append(f"{name}: WML has {mine[0].status} to {topic}, spec {want.state} "
                                          f"to {want.topic}")
            if operation == "delete" and any(d.entity.name == f"{ns}/{target}" for d in deployments):
                trial.problems.append(f"{target}: deleted, but its WML deployment is left")
            print(trial.report(seed))  # shown when the case fails
            assert not trial.problems, trial.report(seed)

        # The end: every resource deleted with the operator running; nothing is left on either side.
        for name in list(alive):
            kubectl("delete", "sdep", name, "-n", ns, "--wait=false")
        state, _ = wait_converged(k8s_api, ns, service, user, timeout=120)
        assert state.ok, f"seed {seed}: after deleting all: {state}"
        assert not list_sdeps(k8s_api, ns), f"seed {seed}: resources left after deleting all"
        assert wml.list_instance_deployments() == [], f"seed {seed}: deployments left after deleting all"
    finally:
        pool.shutdown()
        record(figures, done, seed)


def record(figures: Figures, done: list[Trial], seed: int) -> None:
    def row(operation: str, trials: list[Trial]) -> None:
        finished = [t for t in trials if t.state is not None]
        recovery = [t.recovery_s for t in finished]
        points: dict[str, int] = {}
        for t in trials:
            points[t.kill_point or "unfinished"] = points.get(t.kill_point or "unfinished", 0) + 1
        needed = {"create": 1, "recreate": 1}
        figures.add("kill9", operation=operation, trials=len(trials),
                    converged=sum(1 for t in finished if t.state is not None and t.state.ok and not t.problems),
                    duplicates=sum(t.state.duplicates for t in finished if t.state is not None),
                    orphans=sum(t.state.orphans for t in finished if t.state is not None),
                    stuck=sum(len(t.state.stuck) + len(t.state.not_ready) + len(t.state.wrong_status)
                              for t in finished if t.state is not None),
                    kill_points=dict(sorted(points.items())),
                    extra_creates=sum(max(0, t.creates - needed.get(t.operation, 0)) for t in finished),
                    median_restart_s=round(statistics.median([t.start_s for t in finished]), 1) if finished else None,
                    median_recovery_s=round(statistics.median(recovery), 1) if recovery else None,
                    max_recovery_s=round(max(recovery), 1) if recovery else None)

    for operation in OPERATIONS:
        mine = [t for t in done if t.operation == operation]
        if mine:
            row(operation, mine)
    if done:
        row(f"all (seed {seed})", done)
