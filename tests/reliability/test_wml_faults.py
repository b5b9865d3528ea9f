"""Faults of the WML service as the operator sees them, injected by the fault proxy: down, 5xx, slow, 429,
token expiry and revoked credentials; and drift made behind the operator's back, many at once."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.conftest import Figures
from tests.e2e.conftest import StreamEnv, create_secrets, wait_for
from tests.reliability.checks import Convergence, condition, convergence, list_sdeps, wait_converged, wml_client
from tests.reliability.conftest import OPERATOR_ENV, count
from wml_api.models import Deployment
from wml_localplatform.faultproxy import FaultProxy, Seen
from wml_localplatform.wmloperator import WMLOperator
from wml_localplatform.wmlservice import WMLService, WMLUser

Kubectl = Callable[..., Any]


def test_wml_down_then_back(fault_namespace: str, k8s_api: k8s.ApiClient, kubectl: Kubectl,
                            make_wml_service: Callable[..., WMLService],
                            fault_proxy: Callable[[WMLService], FaultProxy],
                            start_operator: Callable[..., WMLOperator], figures: Figures) -> None:
    ns = fault_namespace
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false")
    proxy = fault_proxy(service)
    user = service.add_user()
    create_secrets(k8s_api, ns, proxy.url, user, None)
    env = StreamEnv(ns, "in", "out", user, service, None)  # type: ignore[arg-type]
    start_operator(ns)
    for i in range(3):
        kubectl("apply", "-f", "-", input=env.manifest(name=f"s{i}"))
    state, _ = wait_converged(k8s_api, ns, service, user, timeout=60)
    assert state.ok, state

    proxy.down()
    kubectl("patch", "sdep", "s0", "-n", ns, "--type=merge", "-p", '{"spec": {"state": "STOPPED"}}')
    shown = wait_for("Reconciling WMLUnavailable while WML is down", lambda: (
        (c := condition(next(o for o in list_sdeps(k8s_api, ns) if o["metadata"]["name"] == "s0"), "Reconciling"))
        and c["reason"] == "WMLUnavailable" and c), timeout=60)
    assert isinstance(shown, dict)
    time.sleep(5)
    back = time.monotonic()
    proxy.up()
    state, seconds = wait_converged(k8s_api, ns, service, user, timeout=120)
    assert state.ok, state
    figures.add("faults", fault="WML service down 5 s+", injected=1, recovered=int(state.ok),
                shown=f"Reconciling/{shown['reason']}", recovery_s=round(time.monotonic() - back, 1),
                duplicates=state.duplicates, orphans=state.orphans)
    assert len(wml_client(service, user).list_instance_deployments()) == 3
    assert seconds >= 0


# --- the chain the cases below build -------------------------------------------------------------------------

TIMEOUT = float(OPERATOR_ENV["WML_OPERATOR_WML_TIMEOUT_SECONDS"])  # the operator's read timeout for WML calls
ABNORMAL = ("Reconciling", "Stalled")


def names(n: int) -> list[str]:
    return [f"s{i}" for i in range(n)]


@dataclass
class Watch:
    """What the resources showed while a fault lasted: each abnormal condition as Type/Reason with the messages
    it carried, and which of `keep_ready` ever showed Ready other than True."""

    keep_ready: Collection[str] = ()
    shown: dict[str, list[str]] = field(default_factory=dict)
    lost_ready: set[str] = field(default_factory=set)

    def look(self, objs: list[dict[str, Any]]) -> None:
        for obj in objs:
            for c in obj.get("status", {}).get("conditions", []):
                if c["type"] in ABNORMAL and c["status"] == "True":
                    messages = self.shown.setdefault(f"{c['type']}/{c['reason']}", [])
                    if c["message"] not in messages:
                        messages.append(c["message"])
            ready = condition(obj, "Ready")
            if obj["metadata"]["name"] in self.keep_ready and (not ready or ready["status"] != "True"):
                self.lost_ready.add(obj["metadata"]["name"])

    def said(self, shown: str, text: str) -> bool:
        """Whether `shown` (Type/Reason) was shown with a message containing `text`."""
        return any(text in message for message in self.shown.get(shown, []))

    def stalled(self) -> list[str]:
        return [k for k in self.shown if k.startswith("Stalled/")]

    def wml_reasons(self) -> str:
        """The fault-related part of what was shown (a state change's own Reconciling/Stopping is not)."""
        return ", ".join(k for k in self.shown if "/WML" in k) or "none"


@dataclass
class Chain:
    """A fault namespace, its own operator, and an accept-only WML service it reaches through a fault proxy."""

    ns: str
    api: k8s.ApiClient
    kubectl: Kubectl
    service: WMLService
    proxy: FaultProxy
    user: WMLUser  # whose credentials the `wml` Secret holds; the checks read WML with them too

    def apply(self, which: list[str], state: str = "RUNNING") -> None:
        env = StreamEnv(self.ns, "in", "out", self.user, self.service, None)  # type: ignore[arg-type]
        items = [json.loads(env.manifest(name=name, state=state)) for name in which]
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

    def set_state(self, name: str, state: str) -> None:
        self.kubectl("patch", "sdep", name, "-n", self.ns, "--type=merge", "-p",
                     json.dumps({"spec": {"state": state}}))

    def sdeps(self) -> dict[str, dict[str, Any]]:
        return {o["metadata"]["name"]: o for o in list_sdeps(self.api, self.ns)}

    def deployments(self) -> dict[str, list[Deployment]]:
        """The WML deployments by resource name, read from the service itself (not through the proxy)."""
        out: dict[str, list[Deployment]] = {}
        for dep in wml_client(self.service, self.user).list_instance_deployments():
            out.setdefault(dep.entity.name.split("/", 1)[-1], []).append(dep)
        return out

    def creates(self, since: float) -> int:
        """Deployment creates (POSTs) that went through the proxy since `since`."""
        return len(self.proxy.requests(since, method="POST", path="/deployments"))

    def warnings(self, reason: str) -> Counter[str]:
        """Warning events of that reason, per resource name."""
        events = k8s.CoreV1Api(self.api).list_namespaced_event(self.ns, field_selector=f"reason={reason}").items
        return Counter(str(e.involved_object.name) for e in events if e.type == "Warning")

    def watch_until(self, watch: Watch, what: str, done: Callable[[], object], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            watch.look(list_sdeps(self.api, self.ns))
            if done():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; shown: {watch.shown}")
            time.sleep(0.3)

    def settle(self, watch: Watch | None = None, timeout: float = 120.0) -> tuple[Convergence, float]:
        """Waits until converged with no resource Reconciling or Stalled; returns the last state and the
        monotonic time it was reached (or the timeout was)."""
        client = wml_client(self.service, self.user)
        deadline = time.monotonic() + timeout
        while True:
            objs = list_sdeps(self.api, self.ns)
            if watch is not None:
                watch.look(objs)
            state = convergence(self.api, self.ns, client.list_instance_deployments())
            state.not_ready += [f"{o['metadata']['name']} ({c['type']}/{c['reason']})" for o in objs
                                for c in o.get("status", {}).get("conditions", [])
                                if c["type"] in ABNORMAL and c["status"] == "True"]
            now = time.monotonic()
            if state.ok or now > deadline:
                return state, now
            time.sleep(0.5)


@pytest.fixture
def chain(fault_namespace: str, k8s_api: k8s.ApiClient, kubectl: Kubectl,
          make_wml_service: Callable[..., WMLService], fault_proxy: Callable[[WMLService], FaultProxy],
          start_operator: Callable[..., WMLOperator]) -> Callable[..., Chain]:
    """chain(n, **service_env): the whole chain with n RUNNING resources s0..s{n-1}, already converged."""

    def make(resources: int, **service_env: str) -> Chain:
        service = make_wml_service(WML_SERVER_RUN_STREAMS="false", **service_env)
        proxy = fault_proxy(service)
        user = service.add_user()
        create_secrets(k8s_api, fault_namespace, proxy.url, user, None)
        made = Chain(fault_namespace, k8s_api, kubectl, service, proxy, user)
        start_operator(fault_namespace)
        made.apply(names(resources))
        state, _ = made.settle(timeout=60 + 3 * resources)
        assert state.ok, state
        return made

    return make


def _faulted(chain: Chain, since: float, status: int) -> list[Seen]:
    return [s for s in chain.proxy.requests(since) if s.status == status]


# --- the cases -----------------------------------------------------------------------------------------------

def test_wml_5xx_bursts(chain: Callable[..., Chain], figures: Figures) -> None:
    """Bursts of 503 and 500: while WML fails, the resources that were Ready stay Ready and show
    Reconciling/WMLUnavailable with WML's answer; a state change made meanwhile goes through once WML answers
    again; nothing is created, nothing duplicated or orphaned."""
    n, size = count(10, 3), count(12, 4)
    c = chain(n)
    codes = [503, 500] * count(3, 1)
    results: dict[int, list[tuple[Convergence, float, int]]] = {code: [] for code in dict.fromkeys(codes)}
    for i, code in enumerate(codes):
        target = f"s{i % n}"
        state = "STOPPED" if c.sdeps()[target]["spec"]["state"] == "RUNNING" else "RUNNING"
        since = time.monotonic()
        c.proxy.fail(size, code)
        c.set_state(target, state)
        watch = Watch(keep_ready=set(names(n)) - {target})
        c.watch_until(watch, f"{size} answers {code}", lambda: len(_faulted(c, since, code)) >= size)  # noqa: B023
        converged, settled = c.settle(watch)
        assert converged.ok, converged
        assert watch.said("Reconciling/WMLUnavailable", f"{code} injected_fault"), watch.shown
        assert not watch.stalled(), watch.shown
        assert not watch.lost_ready, f"lost Ready while WML answered {code}: {watch.lost_ready}"
        assert c.creates(since) == 0
        assert c.sdeps()[target]["status"]["wmlStatus"] == state
        results[code].append((converged, settled - max(s.at for s in _faulted(c, since, code)), c.creates(since)))
    for code, runs in results.items():
        figures.add("faults", fault=f"HTTP {code}, {size} requests in a row", injected=len(runs),
                    recovered=sum(r[0].ok for r in runs), shown="Reconciling/WMLUnavailable",
                    recovery_s=round(max(r[1] for r in runs), 1), duplicates=sum(r[0].duplicates for r in runs),
                    orphans=sum(r[0].orphans for r in runs), creates=sum(r[2] for r in runs))


def test_wml_responses_slower_than_the_timeout(chain: Callable[..., Chain], figures: Figures) -> None:
    """Answers that take longer than the operator's read timeout: it gives up on each, says so on the
    resources (Reconciling/WMLUnavailable, "no response ... within 3s"), keeps Ready, and converges."""
    n, slowed = count(10, 3), count(12, 4)
    delay = TIMEOUT + 2
    c = chain(n)
    since = time.monotonic()
    c.proxy.slow(delay, slowed)
    c.set_state("s0", "STOPPED")
    watch = Watch(keep_ready=names(n)[1:])
    c.watch_until(watch, f"{slowed} slowed requests", lambda: len(c.proxy.requests(since)) >= slowed)
    converged, settled = c.settle(watch)
    assert converged.ok, converged
    assert watch.said("Reconciling/WMLUnavailable", f"within {TIMEOUT:g}s"), watch.shown
    assert not watch.lost_ready, f"lost Ready while WML was slow: {watch.lost_ready}"
    assert not watch.stalled(), watch.shown
    assert c.creates(since) == 0
    last_answered = sorted(s.at for s in c.proxy.requests(since))[slowed - 1] + delay
    figures.add("faults", fault=f"{slowed} answers {delay:g} s late (timeout {TIMEOUT:g} s)", injected=slowed,
                recovered=slowed if converged.ok else 0, shown="Reconciling/WMLUnavailable",
                recovery_s=round(settled - last_answered, 1), duplicates=converged.duplicates,
                orphans=converged.orphans, creates=c.creates(since))


def test_wml_create_timeout_makes_no_duplicate(chain: Callable[..., Chain], figures: Figures) -> None:
    """The POST of a create times out. When the service did create (only the answer was late), the retry
    finds the deployment by the resource's UID marker and adopts it: exactly one POST, never a second
    deployment. When the request itself was held until after the retry had created one, the late one is a
    duplicate the operator must remove: the resource ends with exactly one deployment either way."""
    reps = count(3, 1)
    c = chain(1)
    rows = []
    for late in (True, False):
        hold = TIMEOUT + 2 if late else TIMEOUT + 5  # held: past the retry (timeout + 2 s backoff +- 20 %)
        runs: list[tuple[Convergence, float, int]] = []
        for i in range(reps):
            name = f"{'late' if late else 'held'}{i}"
            since = time.monotonic()
            c.proxy.slow(hold, 1, method="POST", late=late)
            c.apply([name])
            watch = Watch()

            def post_timed_out(w: Watch = watch) -> bool:
                return any("POST " in m and f"within {TIMEOUT:g}s" in m
                           for m in w.shown.get("Reconciling/WMLUnavailable", []))

            c.watch_until(watch, "the create's timeout shown", post_timed_out)
            # The held POST reaches the service at most `hold` after it arrived, which was TIMEOUT before the
            # operator said it timed out: only after that is "one deployment" a result, not a race.
            landed = time.monotonic() + (0 if late else hold - TIMEOUT + 0.5)
            c.watch_until(watch, "the held request to land", lambda: time.monotonic() > landed)  # noqa: B023
            converged, settled = c.settle(watch)
            assert converged.ok, converged
            assert not watch.stalled(), watch.shown
            assert len(c.deployments()[name]) == 1
            # The proxy records a request when its (held) answer has gone out: wait for that, not only for WML.
            wait_for("the held POST recorded", lambda: c.creates(since) >= 1, timeout=30)  # noqa: B023
            creates = c.creates(since)
            if late:
                assert creates == 1, "the retry created again although the first create had gone through"
            else:
                assert creates in (1, 2)  # 1: the retry came only after the held request had landed
            if creates == 2:
                wait_for("a DuplicateDeleted event", lambda: c.warnings("DuplicateDeleted")[name], timeout=60)  # noqa: B023
            runs.append((converged, settled - landed, creates))
        rows.append(dict(fault=("create: the service acted, its answer came after the timeout" if late else
                                "create: the request held past the operator's retry"), injected=reps,
                         recovered=sum(r[0].ok for r in runs), shown="Reconciling/WMLUnavailable",
                         recovery_s=round(max(r[1] for r in runs), 1),
                         duplicates=sum(r[0].duplicates for r in runs), orphans=sum(r[0].orphans for r in runs),
                         creates=sum(r[2] for r in runs)))
    for row in rows:
        figures.add("faults", **row)


def test_wml_rate_limited_with_retry_after(chain: Callable[..., Chain], figures: Figures) -> None:
    """429 with Retry-After: no request reaches WML sooner than Retry-After after a 429 (measured at the
    proxy, all resources together: the operator shares one client per WML instance); the resources show
    Reconciling/WMLUnavailable meanwhile and converge after."""
    n, limited, retry_after = count(10, 3), count(10, 4), 2.0
    c = chain(n)
    since = time.monotonic()
    c.proxy.rate_limit(limited, retry_after=retry_after)
    c.set_state("s0", "STOPPED")
    watch = Watch(keep_ready=names(n)[1:])
    c.watch_until(watch, f"{limited} answers 429", lambda: len(_faulted(c, since, 429)) >= limited)
    converged, settled = c.settle(watch)
    assert converged.ok, converged
    seen = sorted(c.proxy.requests(since), key=lambda s: s.at)
    gaps = [min((later.at for later in seen[i + 1:]), default=float("inf")) - s.at
            for i, s in enumerate(seen) if s.status == 429]
    assert len(gaps) == limited
    assert min(gaps) >= 0.9 * retry_after, f"a request came {min(gaps):.2f} s after a 429 (Retry-After " \
                                           f"{retry_after:g}): {[(round(s.at - since, 2), s.status) for s in seen]}"
    assert watch.said("Reconciling/WMLUnavailable", "429 rate_limited"), watch.shown
    assert not watch.lost_ready, f"lost Ready while rate limited: {watch.lost_ready}"
    assert not watch.stalled(), watch.shown
    assert c.creates(since) == 0
    figures.add("faults", fault=f"HTTP 429 with Retry-After {retry_after:g} s, {limited} in a row", injected=limited,
                recovered=limited if converged.ok else 0, shown="Reconciling/WMLUnavailable",
                recovery_s=round(settled - max(s.at for s in _faulted(c, since, 429)), 1),
                duplicates=converged.duplicates, orphans=converged.orphans, creates=c.creates(since),
                min_gap_after_429_s=round(min(gaps), 2))


def test_wml_token_expiry(chain: Callable[..., Chain], figures: Figures) -> None:
    """Tokens that live 3 s, over many lifetimes while a resource changes state again and again: the operator
    gets new tokens as they run out, no resource ever shows Stalled or WMLUnauthorized, the others stay Ready."""
    ttl, n, duration = 3, count(6, 3), count(40, 15)
    c = chain(n, WML_SERVER_TOKEN_TTL=str(ttl))
    since = time.monotonic()
    watch = Watch(keep_ready=names(n)[1:])
    changes, slowest = 0, 0.0
    while time.monotonic() - since < duration:
        changes += 1
        started = time.monotonic()
        c.set_state("s0", "STOPPED" if changes % 2 else "RUNNING")
        converged, settled = c.settle(watch, timeout=60)
        assert converged.ok, converged
        slowest = max(slowest, settled - started)
        time.sleep(1)
    elapsed = time.monotonic() - since
    tokens = c.proxy.requests(since, path="/identity/token")
    assert len(tokens) >= 2, tokens
    assert not watch.stalled(), watch.shown
    assert not [k for k in watch.shown if "WMLUnauthorized" in k], watch.shown
    assert not watch.lost_ready, f"lost Ready while tokens expired: {watch.lost_ready}"
    assert not c.warnings("WMLUnauthorized")
    assert c.creates(since) == 0
    converged, _ = c.settle(watch)
    assert converged.ok, converged
    figures.add("faults", fault=f"token expiry: {ttl} s tokens, {elapsed:.0f} s of {changes} state changes",
                injected=int(elapsed // ttl), recovered=int(elapsed // ttl), shown=watch.wml_reasons(),
                recovery_s=round(slowest, 1), duplicates=converged.duplicates, orphans=converged.orphans,
                creates=c.creates(since), token_requests=len(tokens),
                rejected_401=len(_faulted(c, since, 401)))


def _replace_credentials(c: Chain, user: WMLUser) -> None:
    core = k8s.CoreV1Api(c.api)
    secret = core.read_namespaced_secret("wml", c.ns)
    secret.data = {**(secret.data or {}), "username": base64.b64encode(user.username.encode()).decode(),
                   "password": base64.b64encode(user.password.encode()).decode()}
    core.replace_namespaced_secret("wml", c.ns, secret)


def test_wml_credentials_revoked_then_replaced(chain: Callable[..., Chain], figures: Figures) -> None:
    """The operator's WML user is deleted: every resource goes Stalled with WMLUnauthorized and a Warning event
    says so. New credentials of the same instance in the Secret: Ready again, each with the same deployment
    (adopted, none created, none duplicated)."""
    n = count(6, 2)
    c = chain(n)
    before = {name: obj["status"]["deploymentId"] for name, obj in c.sdeps().items()}
    old = c.user
    replacement = c.service.add_user(instance_id=old.instance_id)
    since = time.monotonic()
    c.service.delete_user(old.username)
    c.user = replacement  # the checks read WML with credentials that still work
    watch = Watch()

    def stalled() -> bool:
        return all((s := condition(o, "Stalled")) is not None and s["status"] == "True"
                   and s["reason"] == "WMLUnauthorized" for o in c.sdeps().values())

    c.watch_until(watch, "every resource Stalled with WMLUnauthorized", stalled, timeout=90)
    assert watch.said("Stalled/WMLUnauthorized", "credentialsSecretRef"), watch.shown
    assert all(condition(o, "Ready")["status"] == "False" for o in c.sdeps().values())  # type: ignore[index]
    wait_for("a WMLUnauthorized Warning event on every resource",
             lambda: set(c.warnings("WMLUnauthorized")) == set(before), timeout=60)
    fixed = time.monotonic()
    _replace_credentials(c, replacement)
    converged, settled = c.settle(watch)
    assert converged.ok, converged
    assert {name: obj["status"]["deploymentId"] for name, obj in c.sdeps().items()} == before
    assert c.creates(since) == 0
    assert all(len(deps) == 1 for deps in c.deployments().values())
    figures.add("faults", fault="credentials revoked (user deleted), then new ones in the Secret", injected=1,
                recovered=int(converged.ok), shown="Stalled/WMLUnauthorized", recovery_s=round(settled - fixed, 1),
                duplicates=converged.duplicates, orphans=converged.orphans, creates=c.creates(since))


def test_wml_mass_drift(chain: Callable[..., Chain], figures: Figures) -> None:
    """Behind the operator's back, all at once: half of the resources' WML deployments deleted, the other half
    stopped. Every one converges: the deleted ones re-created (new ids, one create each), the stopped ones
    started again (same ids), each with a Warning event (DeletedBehindOurBack / StoppedBehindOurBack)."""
    n = count(50, 10)
    c = chain(n)
    deps = {name: found[0] for name, found in c.deployments().items()}
    assert sorted(deps) == sorted(names(n))
    deleted, stopped = names(n)[::2], names(n)[1::2]
    client = wml_client(c.service, c.user)

    def stop(name: str) -> None:
        model_id = deps[name].model_id
        assert model_id is not None
        client.set_deployment_status(model_id, deps[name].id, "STOPPED")

    since = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        done = [pool.submit(client.delete_instance_deployment, deps[name].id) for name in deleted]
        done += [pool.submit(stop, name) for name in stopped]
        for future in done:
            future.result()
    drifted = time.monotonic()
    watch = Watch()
    converged, settled = c.settle(watch, timeout=count(300, 120))
    assert converged.ok, converged
    assert not watch.stalled(), watch.shown  # a drift is never the user's to fix
    now, wml = c.sdeps(), c.deployments()
    recreated = [x for x in deleted if now[x]["status"]["deploymentId"] != deps[x].id]
    restarted = [x for x in stopped if now[x]["status"]["deploymentId"] == deps[x].id and wml[x][0].status == "RUNNING"]
    assert recreated == deleted
    assert restarted == stopped
    assert not {deps[x].id for x in deleted} & {d.id for found in wml.values() for d in found}
    assert c.creates(since) == len(deleted)
    wait_for("DeletedBehindOurBack / StoppedBehindOurBack events", lambda: (
        set(c.warnings("DeletedBehindOurBack")) == set(deleted)
        and set(c.warnings("StoppedBehindOurBack")) == set(stopped)), timeout=60)
    # Each drift is undone in the pass that sees it, so its Reconciling condition lasts a moment: the events
    # are what stays to be seen.
    shown = ", ".join(f"Warning/{reason} ({sum(c.warnings(reason).values())} events)"
                      for reason in ("DeletedBehindOurBack", "StoppedBehindOurBack"))
    figures.add("faults", fault=f"drift: {len(deleted)} deployments deleted + {len(stopped)} stopped at once",
                injected=n, recovered=len(recreated) + len(restarted), shown=shown,
                recovery_s=round(settled - drifted, 1), duplicates=converged.duplicates, orphans=converged.orphans,
                creates=c.creates(since), recreated=len(recreated), restarted=len(restarted),
                drift_s=round(drifted - since, 2))
