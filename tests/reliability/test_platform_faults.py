"""Faults of the platform under the operator: the kube-apiserver and etcd restarted while resources are Ready,
the Kafka broker restarted while a stream runs, the WML service killed (kill -9) and started again while
streams run.

The control plane and the broker are this run's own (`kube_plane`, `kafka_broker`): restarting them is what
these cases are for, so against an external cluster or broker (KUBECONFIG, WSO_KAFKA_BOOTSTRAP) they fail, never
skip. A restart keeps ports, certificates and data, so the session's other clients (k8s_api, kubectl, the topic
admin) carry on afterwards.

Stream cases count records by key: the test's producer is idempotent (a retry across a broker restart must not
put a record twice into the input), and the reader is assigned the output partitions from their beginning
(no group: a rebalance after a restart cannot make it read a record again) and counts each offset once, reading
read_committed. A key seen at two offsets was scored twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from kubernetes import client as k8s

from tests.conftest import Figures
from tests.e2e.conftest import StreamEnv, create_secrets, wait_for
from tests.reliability.checks import Convergence, condition, list_sdeps, wait_converged, wml_client
from tests.reliability.conftest import count
from wml_localplatform import KafkaBroker, KafkaInfo, KubeControlPlane
from wml_localplatform.faultproxy import FaultProxy
from wml_localplatform.wmloperator import WMLOperator
from wml_localplatform.wmlservice import WMLService
from wml_server.settings import Settings

Kubectl = Callable[..., Any]
# The test's own clients complain at every refused connection while a broker is down: expected here, not shown.
QUIET = logging.getLogger("tests.platform_faults.librdkafka")
QUIET.setLevel(logging.CRITICAL)
TWEETS = ["I love this phone, best purchase ever", "This is the worst service I have ever had",
          "What a wonderful day", "I hate waiting in line", "Great news for everyone!", "Terrible, awful, bad"]


# -- what the resources show ----------------------------------------------------------------------------------

def sdeps(k8s_api: k8s.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in list_sdeps(k8s_api, namespace)}


def shown(obj: dict[str, Any]) -> str:
    """What `kubectl get sdep` tells a user: the abnormal condition if there is one, else Ready; and WML's status
    when it is not the declared state."""
    for kind in ("Stalled", "Reconciling", "Ready"):
        cond = condition(obj, kind)
        if cond and cond["status"] == "True":
            label = f"{kind}/{cond['reason']}"
            break
    else:
        cond = condition(obj, "Ready")
        label = f"NotReady/{cond['reason']}" if cond else "no conditions"
    wml = obj.get("status", {}).get("wmlStatus")
    return label if wml == obj["spec"].get("state", "RUNNING") else f"{label} (WML {wml})"


class Watcher:
    """Samples what one resource shows, every half second in a thread; keeps each change of it in order."""

    def __init__(self, k8s_api: k8s.ApiClient, namespace: str, name: str) -> None:
        self.api = k8s.CustomObjectsApi(k8s_api)
        self.namespace, self.name = namespace, name
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                obj = self.api.get_namespaced_custom_object("wmlstream.dev", "v1alpha1", self.namespace,
                                                            "streamingdeployments", self.name, _request_timeout=5)
                label = shown(obj)
            except Exception as exc:  # a sample that fails is recorded as such
                label = f"unreadable ({type(exc).__name__})"
            if not self.seen or self.seen[-1] != label:
                self.seen.append(label)
            self._stop.wait(0.5)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10)
        return self.seen


# -- records in and out ---------------------------------------------------------------------------------------

class Sender:
    """Produces tweets keyed by unique ids, idempotently; `acked` holds the keys the broker acknowledged."""

    def __init__(self, kafka: KafkaInfo, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(kafka.client_config(**{"enable.idempotence": True, "linger.ms": 5,
                                                                 "logger": QUIET}))
        self.acked: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._n = 0

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        key = msg.key().decode()
        if err is None:
            self.acked.append(key)
        else:
            self.failed.append((key, err.str()))

    def _produce(self, key: str) -> None:
        self._n += 1
        value = json.dumps({"tweet": f"{TWEETS[self._n % len(TWEETS)]} #{self._n}", "id": key}).encode()
        while True:
            try:
                self.producer.produce(self.topic, value, key.encode(), on_delivery=self._delivered)
                return
            except BufferError:
                self.producer.poll(0.1)

    def send(self, prefix: str, n: int) -> None:
        for i in range(n):
            self._produce(f"{prefix}{i}")
        self.flush()

    def start(self, prefix: str, per_second: int = 50) -> None:
        """Keeps sending in a thread until stop(): before, during and after a fault."""
        self._stop.clear()

        def run() -> None:
            i = 0
            while not self._stop.is_set():
                for _ in range(per_second // 10):
                    self._produce(f"{prefix}{i}")
                    i += 1
                self.producer.poll(0)
                self._stop.wait(0.1)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.flush()

    def flush(self) -> None:
        left = self.producer.flush(180)
        assert left == 0, f"the test's producer could not deliver {left} records (a harness problem)"
        assert not self.failed, f"the test's producer lost records (a harness problem): {self.failed[:5]}"


class Scores:
    """Reads the output topic read_committed, each offset once; `by_key` counts records per key."""

    def __init__(self, kafka: KafkaInfo, topic: str) -> None:
        self.consumer = Consumer(kafka.client_config(**{
            "group.id": f"faults-{uuid.uuid4().hex[:8]}", "isolation.level": "read_committed",
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "logger": QUIET}))
        partitions = self.consumer.list_topics(topic, timeout=30).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.offsets: set[tuple[int, int]] = set()
        self.by_key: dict[str, int] = {}
        self.bad: list[str] = []

    def drain(self, seconds: float = 1.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is None or msg.error() or (msg.partition(), msg.offset()) in self.offsets:
                continue
            self.offsets.add((msg.partition(), msg.offset()))
            key = msg.key().decode()
            self.by_key[key] = self.by_key.get(key, 0) + 1
            if json.loads(msg.value()).get("prediction") not in ("POSITIVE", "NEGATIVE"):
                self.bad.append(key)

    def wait_all(self, keys: list[str], timeout: float = 240.0) -> None:
        """Reads until every key is scored (or timeout), then 3 s more: a late duplicate would show there."""
        deadline = time.monotonic() + timeout
        wanted = set(keys)
        while time.monotonic() < deadline and not wanted <= self.by_key.keys():
            self.drain(1.0)
        self.drain(3.0)

    def close(self) -> None:
        self.consumer.close()


@dataclass
class Tally:
    """Records of one kind of fault: sent (acknowledged by the broker), scored, scored twice, missing."""

    sent: int = 0
    scored: int = 0
    duplicated: int = 0
    missing: int = 0
    missing_keys: list[str] = field(default_factory=list)

    def add(self, keys: list[str], by_key: dict[str, int]) -> None:
        self.sent += len(keys)
        self.scored += sum(1 for k in keys if k in by_key)
        self.duplicated += sum(by_key.get(k, 0) - 1 for k in keys if by_key.get(k, 0) > 1)
        lost = [k for k in keys if k not in by_key]
        self.missing += len(lost)
        self.missing_keys += lost[:5]

    def columns(self) -> dict[str, int]:
        return {"sent": self.sent, "scored": self.scored, "duplicated": self.duplicated, "missing": self.missing}


# -- the chain ------------------------------------------------------------------------------------------------

@dataclass
class Chain:
    env: StreamEnv
    service: WMLService
    proxy: FaultProxy
    operator: WMLOperator


def chain(namespace: str, k8s_api: k8s.ApiClient, service: WMLService, fault_proxy: Callable[[WMLService], FaultProxy],
          start_operator: Callable[..., WMLOperator], kafka: KafkaInfo | None, topics: tuple[str, str]) -> Chain:
    """The service behind a fault proxy, the Secrets naming the proxy, an operator watching `namespace`."""
    proxy = fault_proxy(service)
    user = service.add_user()
    create_secrets(k8s_api, namespace, proxy.url, user, kafka)
    env = StreamEnv(namespace, *topics, user, service, kafka)  # type: ignore[arg-type]
    return Chain(env, service, proxy, start_operator(namespace))


def converged(k8s_api: k8s.ApiClient, c: Chain, what: str, timeout: float = 180.0) -> Convergence:
    state, _ = wait_converged(k8s_api, c.env.namespace, c.service, c.env.user, timeout=timeout)
    assert state.ok, f"{what}: not converged after {timeout:.0f} s: {state}\noperator log:\n{c.operator.text()[-4000:]}"
    return state


def span(values: list[float]) -> str:
    """"2" or "2-10": the range of some seconds, for a figures row."""
    low, high = f"{min(values):.0f}", f"{max(values):.0f}"
    return low if low == high else f"{low}-{high}"


def serves(k8s_api: k8s.ApiClient) -> bool:
    try:
        k8s.CoreV1Api(k8s_api).list_namespace(limit=1, _request_timeout=5)
    except Exception:  # not serving yet, whatever the reason
        return False
    return True


# -- 4a, 4b: the control plane --------------------------------------------------------------------------------

@pytest.mark.timeout(count(900, 300))
@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_restart(component: str, kube_plane: KubeControlPlane | None, fault_namespace: str,
                               k8s_api: k8s.ApiClient, kubectl: Kubectl, make_wml_service: Callable[..., WMLService],
                               fault_proxy: Callable[[WMLService], FaultProxy],
                               start_operator: Callable[..., WMLOperator], figures: Figures) -> None:
    """After each restart the operator's watches work again: a resource created and a state flipped after it
    are acted on; the untouched resources keep their WML deployment and never stop being Ready."""
    if kube_plane is None:
        pytest.fail(f"restarting {component} needs the control plane this run starts itself; with KUBECONFIG set "
                    "(an external cluster) this case cannot run: unset KUBECONFIG to run the fault suite")
    ns = fault_namespace
    c = chain(ns, k8s_api, make_wml_service(WML_SERVER_RUN_STREAMS="false"), fault_proxy, start_operator, None,
              ("in", "out"))
    for name in ("s0", "s1", "s2"):
        kubectl("apply", "-f", "-", input=c.env.manifest(name=name))
    converged(k8s_api, c, "before the fault", timeout=90)
    before = sdeps(k8s_api, ns)
    ids = {name: obj["status"]["deploymentId"] for name, obj in before.items()}
    untouched = ("s1", "s2")  # s0 has its state flipped after every restart
    ready_since = {name: condition(before[name], "Ready") for name in untouched}

    rounds = count(4, 1)
    state_of_s0, recoveries, outages, downs, ways = "RUNNING", [], [], [], set()
    for i in range(rounds):
        kill = i % 2 == 1
        down = (2.0, 5.0, 10.0, 3.0)[i % 4]
        ways.add("SIGKILL" if kill else "SIGTERM")
        downs.append(down)
        stopped = time.monotonic()
        kube_plane.restart(component, down_seconds=down, kill=kill)
        wait_for("the apiserver to serve again", lambda: serves(k8s_api), timeout=120)
        back = time.monotonic()
        outages.append(back - stopped)
        # Changes made after the restart: only a working watch brings them to the operator.
        state_of_s0 = "STOPPED" if state_of_s0 == "RUNNING" else "RUNNING"
        kubectl("patch", "sdep", "s0", "-n", ns, "--type=merge", "-p",
                json.dumps({"spec": {"state": state_of_s0}}))
        kubectl("apply", "-f", "-", input=c.env.manifest(name=f"n{i}"))
        state = converged(k8s_api, c, f"{component} restart {i + 1} (down {down:g} s, kill={kill})")
        recoveries.append(time.monotonic() - back)
        now = sdeps(k8s_api, ns)
        for name, deployment_id in ids.items():
            assert now[name]["status"]["deploymentId"] == deployment_id, f"{name} was re-created after the restart"
        ids[f"n{i}"] = now[f"n{i}"]["status"]["deploymentId"]
        assert now["s0"]["status"]["wmlStatus"] == state_of_s0
        assert len(wml_client(c.service, c.env.user).list_instance_deployments()) == len(ids)
        assert c.operator.running(), "the operator exited"

    after = sdeps(k8s_api, ns)
    for name in untouched:
        assert condition(after[name], "Ready") == ready_since[name], (
            f"{name}, untouched, did not stay Ready through the restarts: {ready_since[name]} -> "
            f"{condition(after[name], 'Ready')}")
    figures.add("faults", fault=f"{component} restarted ({'/'.join(sorted(ways))}, down {span(downs)} s; the API "
                                f"answered again {span(outages)} s after the stop)",
                injected=rounds, recovered=len(recoveries), shown=f"{shown(after['s1'])} (kept)",
                recovery_s=round(max(recoveries), 1), duplicates=state.duplicates, orphans=state.orphans)


# -- 5: the Kafka broker ----------------------------------------------------------------------------------------

@pytest.mark.timeout(count(1200, 300))
def test_kafka_broker_restart_mid_stream(kafka_broker: KafkaBroker | None, kafka: KafkaInfo,
                                         kafka_topic: Callable[..., str], fault_namespace: str,
                                         k8s_api: k8s.ApiClient, kubectl: Kubectl,
                                         make_wml_service: Callable[..., WMLService],
                                         fault_proxy: Callable[[WMLService], FaultProxy],
                                         start_operator: Callable[..., WMLOperator], figures: Figures) -> None:
    """Records sent before, during and after a broker restart are each scored exactly once; the deployment is
    the same one throughout."""
    if kafka_broker is None:
        pytest.fail("restarting the Kafka broker needs the broker this run starts itself; with WSO_KAFKA_BOOTSTRAP "
                    "set (an external broker) this case cannot run: unset it to run the fault suite")
    ns = fault_namespace
    service = make_wml_service()  # default settings: real streams
    limit = float(service.env.get("WML_SERVER_KAFKA_UNREACHABLE_TIMEOUT",
                                  Settings.model_fields["kafka_unreachable_timeout"].default))
    c = chain(ns, k8s_api, service, fault_proxy, start_operator, kafka,
              (kafka_topic("tweets", partitions=2), kafka_topic("sentiment")))
    kubectl("apply", "-f", "-", input=c.env.manifest(name="tweets"))
    converged(k8s_api, c, "before the fault")
    deployment_id = sdeps(k8s_api, ns)["tweets"]["status"]["deploymentId"]
    sender, scores = Sender(kafka, c.env.input_topic), Scores(kafka, c.env.output_topic)
    tallies: dict[str, Tally] = {}
    outages: dict[str, list[float]] = {}
    recoveries: dict[str, list[float]] = {}
    showns: dict[str, list[str]] = {}
    try:
        sender.send("a-", 200)
        scores.wait_all(sender.acked, timeout=120)
        assert set(sender.acked) <= scores.by_key.keys(), "the stream did not score records before the fault"
        for i in range(count(4, 1)):
            way = "kill -9" if i % 2 else "clean stop"
            first = len(sender.acked) if i else 0
            sender.start(f"r{i}-")
            time.sleep(1.0)
            watcher = Watcher(k8s_api, ns, "tweets")
            stopped = time.monotonic()
            kafka_broker.restart(down_seconds=3.0, kill=way == "kill -9")
            back = time.monotonic()
            outages.setdefault(way, []).append(back - stopped)
            time.sleep(2.0)
            sender.stop()
            sender.send(f"p{i}-", 100)
            keys = sender.acked[first:]
            scores.wait_all(keys)
            state = converged(k8s_api, c, f"broker {way} {i + 1}")
            recoveries.setdefault(way, []).append(time.monotonic() - back)
            showns.setdefault(way, []).extend(s for s in watcher.stop() if s not in showns.get(way, []))
            tally = tallies.setdefault(way, Tally())
            tally.add(keys, scores.by_key)
            assert tally.missing == 0, f"broker {way}: {tally.missing} records lost, e.g. {tally.missing_keys}"
            assert tally.duplicated == 0, f"broker {way}: {tally.duplicated} records scored twice"
            assert sdeps(k8s_api, ns)["tweets"]["status"]["deploymentId"] == deployment_id
            assert [d.id for d in wml_client(c.service, c.env.user).list_instance_deployments()] == [deployment_id]
            assert state.duplicates == state.orphans == 0
        assert not scores.bad, f"records without a prediction: {scores.bad[:5]}"
    finally:
        scores.close()
    for way, tally in tallies.items():
        figures.add("faults", fault=f"Kafka broker restarted, {way} (down {span(outages[way])} s; "
                                    f"the service's limit {limit:g} s)",
                    injected=len(outages[way]), recovered=len(recoveries[way]), shown=" -> ".join(showns[way]),
                    recovery_s=round(max(recoveries[way]), 1), duplicates=0, orphans=0, **tally.columns())


# -- 6: the WML service -----------------------------------------------------------------------------------------

@pytest.mark.timeout(count(900, 300))
def test_wml_service_kill_9_mid_stream(kafka: KafkaInfo, kafka_topic: Callable[..., str], fault_namespace: str,
                                       k8s_api: k8s.ApiClient, kubectl: Kubectl,
                                       make_wml_service: Callable[..., WMLService],
                                       fault_proxy: Callable[[WMLService], FaultProxy],
                                       start_operator: Callable[..., WMLOperator], figures: Figures) -> None:
    """While the service is down the resource says WMLUnavailable; started again on the same data, it resumes
    the same deployment and every record sent before, during and after is scored exactly once."""
    ns = fault_namespace
    c = chain(ns, k8s_api, make_wml_service(), fault_proxy, start_operator, kafka,
              (kafka_topic("tweets", partitions=2), kafka_topic("sentiment")))
    kubectl("apply", "-f", "-", input=c.env.manifest(name="tweets"))
    converged(k8s_api, c, "before the fault")
    deployment_id = sdeps(k8s_api, ns)["tweets"]["status"]["deploymentId"]
    sender, scores = Sender(kafka, c.env.input_topic), Scores(kafka, c.env.output_topic)
    tally, recoveries, downs, labels = Tally(), [], [], []
    try:
        sender.send("a-", 200)
        scores.wait_all(sender.acked, timeout=120)
        assert set(sender.acked) <= scores.by_key.keys(), "the stream did not score records before the fault"
        rounds = count(3, 1)
        for i in range(rounds):
            first = len(sender.acked) if i else 0
            sender.start(f"r{i}-")
            time.sleep(1.0)
            killed = time.monotonic()
            c.service.kill()
            obj = wait_for("the resource to show that WML is unavailable", lambda: (
                (o := sdeps(k8s_api, ns)["tweets"]) and (cond := condition(o, "Reconciling"))
                and cond["status"] == "True" and cond["reason"] == "WMLUnavailable" and o), timeout=90)
            assert isinstance(obj, dict)
            if (label := shown(obj)) not in labels:
                labels.append(label)
            c.service.start()
            back = time.monotonic()
            downs.append(back - killed)
            time.sleep(2.0)
            sender.stop()
            sender.send(f"p{i}-", 100)
            keys = sender.acked[first:]
            scores.wait_all(keys)
            state = converged(k8s_api, c, f"service kill -9 {i + 1}")
            recoveries.append(time.monotonic() - back)
            tally.add(keys, scores.by_key)
            assert tally.missing == 0, f"kill {i + 1}: {tally.missing} records lost, e.g. {tally.missing_keys}"
            assert tally.duplicated == 0, f"kill {i + 1}: {tally.duplicated} records scored twice"
            assert sdeps(k8s_api, ns)["tweets"]["status"]["deploymentId"] == deployment_id, "a new deployment"
            assert [d.id for d in wml_client(c.service, c.env.user).list_instance_deployments()] == [deployment_id]
            assert state.duplicates == state.orphans == 0
        assert not scores.bad, f"records without a prediction: {scores.bad[:5]}"
    finally:
        scores.close()
    figures.add("faults", fault=f"WML service kill -9, started again (down {span(downs)} s)",
                injected=rounds, recovered=len(recoveries), shown=" -> ".join(labels),
                recovery_s=round(max(recoveries), 1), duplicates=0, orphans=0, **tally.columns())
