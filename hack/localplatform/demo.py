"""`make demo`: tweets scored POSITIVE/NEGATIVE by a stream declared as a StreamingDeployment, on the local platform.

    python -m localplatform.demo up       start everything, run the scenario, leave it running
    python -m localplatform.demo status   what is running, and how to look around
    python -m localplatform.demo down     stop everything the demo started, remove its folder
    python -m localplatform.demo send TEXT...   one tweet per argument to the input topic
    python -m localplatform.demo scores [--follow]   the scored records of the output topic

(hack/ on PYTHONPATH; the Makefile does that.) Everything lives in $WSO_DEMO_DIR (default
/tmp/wml-stream-operator/demo): the platform's data, logs and PID files, so `down` stops exactly what `up`
started. `up` pauses before each change of state when run in a terminal; `--ci` (or WSO_DEMO_NONINTERACTIVE=1,
or CI=true) never pauses and prints no colours.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import KafkaException

from localplatform import process
from localplatform.config import MissingPrerequisite, PlatformConfig
from localplatform.kafka import KafkaBroker, KafkaInfo
from localplatform.kube import KubeControlPlane
from localplatform.process import StartFailed
from localplatform.tweets import DATA_FILE, SDIST, Tweet, TweetsUnavailable, polar_tweets
from localplatform.wmloperator import (
    OPERATOR_NAMESPACE,
    ROOT,
    SERVICE_ACCOUNT,
    WMLOperator,
    install_crd,
    install_rbac,
    service_account_kubeconfig,
)
from localplatform.wmlservice import WMLService

SAMPLES = ROOT / "deploy" / "samples"
SAMPLE = SAMPLES / "wmlstream.dev_v1alpha1_streamingdeployment.yaml"
SAMPLE_SECRETS = SAMPLES / "secrets.yaml"
NAMESPACE = "marketing"
DEFAULT_DIR = Path("/tmp/wml-stream-operator/demo")  # noqa: S108 - beside `make platform-up`'s folder
MARKER = ".wml-stream-operator-demo"  # only a folder holding it is ever removed by `down`
DEFAULT_WML_PORT = 9443  # the WML service's own default; WSO_DEMO_WML_PORT=0 picks a free one
BEFORE_STOP, WHILE_STOPPED = 240, 60  # tweets sent while RUNNING, then while STOPPED
QUIET_SECONDS = 5.0  # how long the demo watches the output topic while the stream is STOPPED
SEED = 2017  # which tweets are picked: the same ones every run
QUIET = {"log_level": 4}  # librdkafka: warnings and errors only, no informational lines in the demo's output


class DemoError(RuntimeError):
    """An expected failure: the message says what went wrong and what to do."""


class PortTaken(DemoError):
    """A port the demo needs is in use by another program."""


def default_dir() -> Path:
    return Path(os.environ["WSO_DEMO_DIR"]) if os.environ.get("WSO_DEMO_DIR") else DEFAULT_DIR


# --- output ------------------------------------------------------------------------------------------------


class Console:
    """Step headers with the time since the start; everything else indented under them."""

    def __init__(self, *, color: bool, interactive: bool) -> None:
        self.color = color
        self.interactive = interactive
        self.started = time.monotonic()

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def step(self, title: str) -> None:
        line = f"[{self.elapsed()}] {title}"
        print("\n" + (f"\033[1m{line}\033[0m" if self.color else line), flush=True)

    def say(self, text: str = "") -> None:
        for line in text.splitlines() or [""]:
            print(f"    {line}".rstrip(), flush=True)

    def command(self, text: str) -> None:
        self.say(f"$ {text}")

    def pause(self, what: str) -> None:
        if self.interactive:
            with contextlib.suppress(EOFError):
                input(f"    -- press Enter to {what} -- ")


# --- where things are --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoState:
    """What `up` made, saved as demo.json (no credential in it: those live in the Secrets)."""

    started: str
    kubeconfig: str
    kubectl: str
    wml_url: str
    instance_id: str
    namespace: str
    name: str
    input_topic: str
    output_topic: str


class Layout:
    def __init__(self, root: Path, config: PlatformConfig) -> None:
        self.root = root
        self.marker = root / MARKER
        self.state_file = root / "demo.json"
        self.bin = root / "bin"
        self.kube = KubeControlPlane(config, root / "kube")
        self.kafka = KafkaBroker(config, root / "kafka")
        self.wml_dir = root / "wml"
        self.operator_dir = root / "operator"

    def wml(self, port: int = 0) -> WMLService:
        return WMLService(self.wml_dir, port=port or None)

    def operator(self) -> WMLOperator:
        return WMLOperator(self.operator_dir, self.operator_dir / "operator.kubeconfig",
                           env={"WML_OPERATOR_POLL_FAST_SECONDS": "1", "WML_OPERATOR_POLL_SLOW_SECONDS": "10"})

    def processes(self) -> dict[str, bool]:
        """Each process the demo starts, and whether it runs."""
        return {"Kubernetes (etcd, kube-apiserver)": self.kube.running(), "Kafka": self.kafka.running(),
                "WML service": process.is_running(self.wml_dir / "wml-server.pid"),
                "operator": process.is_running(self.operator_dir / "operator.pid")}

    def state(self) -> DemoState | None:
        try:
            return DemoState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def is_demo_dir(self) -> bool:
        return self.marker.is_file()


class Kubectl:
    """kubectl with the demo's admin kubeconfig; failures become DemoError with kubectl's message."""

    def __init__(self, binary: Path, kubeconfig: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.binary), f"--kubeconfig={self.kubeconfig}", *args], input=input,
                                capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise DemoError(f"kubectl {shlex.join(args)} failed: {result.stderr.strip()}")
        return result

    def json(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self(*args, "-o", "json").stdout)
        return data


# --- prerequisites -----------------------------------------------------------------------------------------


def check_prerequisites(config: PlatformConfig) -> list[str]:
    """Every missing prerequisite, each saying what to install or run."""
    problems = []
    checks: list[Callable[[], object]] = [
        lambda: config.k8s_binary("kube-apiserver"), lambda: config.k8s_binary("kube-controller-manager"),
        lambda: config.k8s_binary("kubectl"), config.etcd, config.kafka_libs, config.java]
    for check in checks:
        try:
            check()
        except MissingPrerequisite as exc:
            problems.append(str(exc))
    return problems


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the service binds (SO_REUSEADDR): a port whose last connections are in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise PortTaken(
                f"port {port} on 127.0.0.1 is taken, and the demo's WML service needs it: free it "
                f"(`ss -ltnp 'sport = :{port}'` shows which program holds it) or pick another port with "
                f"WSO_DEMO_WML_PORT=<port> (0: any free port)") from None


# --- the scenario's pieces ---------------------------------------------------------------------------------


def sample_resource(namespace: str, wml_url: str) -> dict[str, Any]:
    """deploy/samples' StreamingDeployment, in our namespace and pointed at the local WML service."""
    doc: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["wml"]["url"] = wml_url
    return doc


def sample_secrets(resource: dict[str, Any], namespace: str, wml: dict[str, str], kafka: dict[str, str],
                   spark_json: str) -> list[dict[str, Any]]:
    """deploy/samples/secrets.yaml with every placeholder replaced by the local platform's real values."""
    spec = resource["spec"]
    values = {
        spec["wml"]["credentialsSecretRef"]["name"]: wml,
        spec["input"]["connectionSecretRef"]["name"]: kafka,
        spec["output"]["connectionSecretRef"]["name"]: kafka,
        spec["sparkCredentialsSecretRef"]["name"]: {spec["sparkCredentialsSecretRef"]["key"]: spark_json},
    }
    docs = [d for d in yaml.safe_load_all(SAMPLE_SECRETS.read_text()) if d]
    for doc in docs:
        name = doc["metadata"]["name"]
        if name not in values:
            raise DemoError(f"{SAMPLE_SECRETS.relative_to(ROOT)}: Secret {name} is not referenced by the sample")
        unknown = set(doc.get("stringData", {})) - set(values[name])
        if unknown:
            raise DemoError(f"{SAMPLE_SECRETS.relative_to(ROOT)}: the demo has no value for {name}'s keys "
                            f"{sorted(unknown)}")
        doc["metadata"]["namespace"] = namespace
        doc["stringData"] = values[name]
    missing = set(values) - {d["metadata"]["name"] for d in docs}
    if missing:
        raise DemoError(f"{SAMPLE_SECRETS.relative_to(ROOT)} lacks the Secrets {sorted(missing)}")
    return docs


def pick_tweets(tweets: list[Tweet], count: int, seed: int = SEED) -> list[Tweet]:
    """A fixed random sample of the polar tweets, so every run sends the same ones."""
    return random.Random(seed).sample(tweets, count)  # noqa: S311 - picks data, not secrets


def record(tweet: Tweet) -> tuple[bytes, bytes]:
    """A Kafka record (key, value) as the marketing team's collector would write it."""
    return tweet.id.encode(), json.dumps({"id": tweet.id, "tweet": tweet.text}).encode()


@dataclass(frozen=True)
class Summary:
    table: list[list[int]]  # rows: raters positive / negative; columns: model POSITIVE / NEGATIVE
    errors: int  # records the service could not score

    @property
    def total(self) -> int:
        return sum(map(sum, self.table)) + self.errors

    @property
    def agree(self) -> int:
        return self.table[0][0] + self.table[1][1]

    def lines(self) -> list[str]:
        t = self.table
        rows = [("", "model POSITIVE", "model NEGATIVE", "total"),
                ("raters positive", str(t[0][0]), str(t[0][1]), str(t[0][0] + t[0][1])),
                ("raters negative", str(t[1][0]), str(t[1][1]), str(t[1][0] + t[1][1])),
                ("total", str(t[0][0] + t[1][0]), str(t[0][1] + t[1][1]), str(sum(map(sum, t))))]
        out = [f"{a:<16}{b:>16}{c:>16}{d:>8}" for a, b, c, d in rows]
        scored = sum(map(sum, t))
        share = 100.0 * self.agree / scored if scored else 0.0
        out.append(f"agreement with the human raters: {self.agree} of {scored} ({share:.1f} %)")
        if self.errors:
            out.append(f"records the service could not score: {self.errors}")
        return out


def summarize(records: list[dict[str, Any]], truth: dict[str, Tweet]) -> Summary:
    table = [[0, 0], [0, 0]]
    errors = 0
    for rec in records:
        tweet = truth.get(str(rec.get("id")))
        if tweet is None or rec.get("prediction") not in ("POSITIVE", "NEGATIVE"):
            errors += 1
            continue
        table[0 if tweet.mean > 0 else 1][0 if rec["prediction"] == "POSITIVE" else 1] += 1
    return Summary(table, errors)


def shorten(text: str, width: int = 64) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def scored_line(rec: dict[str, Any], truth: dict[str, Tweet] | None = None) -> str:
    tweet = (truth or {}).get(str(rec.get("id")))
    rated = f"  (raters: {tweet.mean:+.2f})" if tweet else ""
    if "prediction" not in rec:
        return f"{'ERROR':<8}        {shorten(str(rec.get('error')))}"
    return f"{rec['prediction']:<8} {rec.get('probability', 0):.2f}  {shorten(str(rec.get('tweet', '')))}{rated}"


class OutputReader:
    """Reads the output topic as a read_committed consumer (what exactly-once promises) and counts keys."""

    def __init__(self, kafka: KafkaInfo, topic: str) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer(kafka.client_config("wml", **QUIET, **{
            "group.id": f"demo-reader-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
            "isolation.level": "read_committed", "enable.auto.commit": False}))
        self.consumer.subscribe([topic])
        self.by_key: dict[str, int] = {}
        self.records: list[dict[str, Any]] = []

    def poll(self, seconds: float) -> list[dict[str, Any]]:
        """The records that arrived within `seconds`."""
        new: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(min(0.2, max(0.01, deadline - time.monotonic())))
            if msg is None or msg.error():
                continue
            key = (msg.key() or b"").decode()
            self.by_key[key] = self.by_key.get(key, 0) + 1
            try:
                value = json.loads(msg.value() or b"")
            except ValueError:
                value = {"error": "not JSON"}
            self.records.append(value)
            new.append(value)
        return new

    def close(self) -> None:
        self.consumer.close()


def produce(kafka: KafkaInfo, topic: str, tweets: list[Tweet]) -> None:
    from confluent_kafka import Producer

    producer = Producer(kafka.client_config("wml", **QUIET))
    for tweet in tweets:
        key, value = record(tweet)
        producer.produce(topic, value, key)
    if producer.flush(30) != 0:
        raise DemoError(f"could not deliver every tweet to topic {topic} within 30 s")


def create_topics(kafka: KafkaInfo, topics: list[str]) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient(kafka.client_config("admin", **QUIET))
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [NewTopic(t, num_partitions=1, replication_factor=1) for t in topics if t not in existing]
    for future in admin.create_topics(wanted).values() if wanted else []:
        future.result(30)


def watch(kubectl: Kubectl, console: Console, namespace: str, name: str, waits: list[str],
          timeout: float = 120.0) -> float:
    """Shows `kubectl get sdep -o wide --watch` live until every `kubectl wait --for=...` condition holds."""
    args = ["get", "sdep", name, "-n", namespace, "-o", "wide", "--watch"]
    console.command(f"kubectl {shlex.join(args)}")
    proc = subprocess.Popen([str(kubectl.binary), f"--kubeconfig={kubectl.kubeconfig}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def show() -> None:
        assert proc.stdout is not None
        last = ""
        for line in proc.stdout:
            # The operator's bookkeeping (annotations, resourceVersion) changes nothing in these columns.
            if line.strip() and line != last:
                console.say("  " + line.rstrip())
                last = line

    reader = threading.Thread(target=show, daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        for condition in waits:
            left = max(1, int(timeout - (time.monotonic() - started)))
            waited = kubectl("wait", f"--for={condition}", f"--timeout={left}s", "-n", namespace, f"sdep/{name}",
                             check=False, timeout=left + 10)
            if waited.returncode != 0:
                raise DemoError(f"sdep/{name} did not reach {condition} within {timeout:.0f} s: "
                                f"{waited.stderr.strip()}")
        return time.monotonic() - started
    finally:
        time.sleep(1.0)  # the watch prints the row that satisfied the wait
        proc.terminate()
        proc.wait(10)
        reader.join(5)


# --- up ----------------------------------------------------------------------------------------------------


@dataclass
class Running:
    """What the scenario needs from the setup."""

    kubectl: Kubectl
    kafka: KafkaInfo
    state: DemoState


def install_commands(layout: Layout, config: PlatformConfig) -> Path:
    """bin/kubectl (the platform's) and bin/wso-demo (this script, for this folder), for the user's PATH."""
    layout.bin.mkdir(exist_ok=True)
    kubectl = layout.bin / "kubectl"
    kubectl.unlink(missing_ok=True)
    kubectl.symlink_to(config.kubectl())
    wrapper = layout.bin / "wso-demo"
    q = shlex.quote
    wrapper.write_text(f"#!/bin/sh\n# `make demo`'s script for the demo in {layout.root}\n"
                       f"WSO_DEMO_DIR={q(str(layout.root))} PYTHONPATH={q(str(ROOT / 'hack'))} "
                       f'exec {q(sys.executable)} -m localplatform.demo "$@"\n')
    wrapper.chmod(0o755)
    return kubectl


def start_platform(layout: Layout, console: Console, config: PlatformConfig, wml_port: int) -> Running:
    console.step("Starting the local platform: Kubernetes API server with etcd, one Kafka broker (on 127.0.0.1)")
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.marker.write_text("make demo's folder: `make demo-down` stops what it started and removes it\n")
    kube = layout.kube.start()
    console.say(f"Kubernetes {kube.version}: {kube.server}, ready in {kube.ready_seconds:.1f} s "
                "(RBAC on, no nodes: the operator runs as a local process)")
    link = install_commands(layout, config)
    kubectl = Kubectl(link, Path(kube.kubeconfig))
    console.say("Kafka: starting the broker (a JVM; 10 to 30 s) ...")
    kafka = layout.kafka.start()
    console.say(f"Kafka {kafka.version}: {kafka.bootstrap}, ready in {kafka.ready_seconds:.1f} s "
                f"({kafka.security_protocol} {kafka.sasl_mechanism}; users admin and wml)")

    console.step("Starting the WML service (the v3 API, running streams with the published models)")
    service = layout.wml(wml_port)
    user = service.add_user("marketing")
    took = service.start()
    console.say(f"{service.url} ready in {took:.1f} s; user `marketing` of WML instance {user.instance_id}")

    console.step(f"Starting the operator under its own RBAC (deploy/rbac.yaml, ServiceAccount "
                 f"{OPERATOR_NAMESPACE}/{SERVICE_ACCOUNT})")
    console.command("kubectl apply -f crds/wmlstream.dev_streamingdeployments.yaml")
    install_crd(kubectl)
    console.command("kubectl apply -f deploy/namespace.yaml -f deploy/serviceaccount.yaml -f deploy/rbac.yaml")
    install_rbac(kubectl)
    operator = layout.operator()
    service_account_kubeconfig(kubectl, Path(kube.kubeconfig), operator.kubeconfig, duration="720h")
    took = operator.start()
    console.say(f"python -m wml_operator (kopf) with a ServiceAccount token kubeconfig: ready in {took:.1f} s")
    console.say(f"log: {operator.log}")

    console.step(f"Creating namespace {NAMESPACE}, the Secrets, and the sample StreamingDeployment")
    resource = sample_resource(NAMESPACE, service.url)
    spec = resource["spec"]
    console.command(f"kubectl create namespace {NAMESPACE}")
    kubectl("create", "namespace", NAMESPACE)
    kafka_user = kafka.user("wml")
    spark = {"tenant_id": "marketing", "tenant_id_full": "marketing-local", "instance_id": str(uuid.uuid4()),
             "cluster_master_url": "https://spark.invalid", "tenant_secret": secrets.token_urlsafe(16),
             "plan": "local"}
    docs = sample_secrets(
        resource, NAMESPACE,
        wml={"username": user.username, "password": user.password, "instance_id": user.instance_id},
        kafka={"kafka_brokers_sasl": json.dumps([kafka.bootstrap]), "user": kafka_user.name,
               "password": kafka_user.password, "security_protocol": kafka.security_protocol},
        spark_json=json.dumps(spark, indent=2))
    console.command(f"kubectl apply -n {NAMESPACE} -f deploy/samples/secrets.yaml   "
                    "# with the local platform's values in place of its placeholders:")
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    for doc in docs:
        console.say(f"  secret/{doc['metadata']['name']:<18} {', '.join(sorted(doc['stringData']))}")
    create_topics(kafka, [spec["input"]["topic"], spec["output"]["topic"]])
    console.say(f"Kafka topics {spec['input']['topic']} (in) and {spec['output']['topic']} (out) created")
    console.command(f"kubectl apply -n {NAMESPACE} -f deploy/samples/{SAMPLE.name}   "
                    f"# with spec.wml.url: {service.url}")
    kubectl("apply", "-f", "-", input=json.dumps(resource))

    state = DemoState(started=time.strftime("%Y-%m-%d %H:%M:%S"), kubeconfig=kube.kubeconfig,
                      kubectl=str(link), wml_url=service.url, instance_id=user.instance_id, namespace=NAMESPACE,
                      name=resource["metadata"]["name"], input_topic=spec["input"]["topic"],
                      output_topic=spec["output"]["topic"])
    layout.state_file.write_text(json.dumps(asdict(state), indent=2))
    return Running(kubectl, kafka, state)


def show_records(console: Console, reader: OutputReader, expected: int, truth: dict[str, Tweet],
                 timeout: float = 90.0, sample: int = 8) -> float:
    """Prints the first records as they arrive, then progress, until `expected` more records were read."""
    started = last = time.monotonic()
    base = len(reader.records)
    while (done := len(reader.records) - base) < expected:
        if time.monotonic() - started > timeout:
            raise DemoError(f"only {done} of {expected} tweets were scored within {timeout:.0f} s")
        if time.monotonic() - last >= 2.0:
            console.say(f"  ... {done} of {expected} scored")
            last = time.monotonic()
        for rec in reader.poll(0.5)[:max(0, sample - done)]:
            console.say("  " + scored_line(rec, truth))
    return time.monotonic() - started


def scenario(run: Running, console: Console, tweets: list[Tweet]) -> None:
    kubectl, kafka, st = run.kubectl, run.kafka, run.state
    truth = {t.id: t for t in tweets}
    first, second = tweets[:BEFORE_STOP], tweets[BEFORE_STOP:]

    console.step(f"Waiting for sdep/{st.name} to be Ready (the operator creates the WML stream deployment)")
    took = watch(kubectl, console, st.namespace, st.name, ["condition=Ready"])
    obj = kubectl.json("get", "sdep", st.name, "-n", st.namespace)
    console.say(f"Ready after {took:.1f} s: WML deployment {obj['status'].get('deploymentId')} is "
                f"{obj['status'].get('wmlStatus')}")

    reader = OutputReader(kafka, st.output_topic)
    try:
        console.step(f"Sending {len(first)} real tweets to topic {st.input_topic}")
        console.say(f"(human-rated tweets from {DATA_FILE} in the {SDIST} source distribution; each record is "
                    '{"id": ..., "tweet": ...}; the raters\' mean is kept aside to compare)')
        produce(kafka, st.input_topic, first)
        console.say(f"Scored records from topic {st.output_topic}, as they arrive (read_committed):")
        took = show_records(console, reader, len(first), truth)
        console.say(f"scored {len(reader.records)} of {len(first)} tweets in {took:.1f} s")
        console.say()
        for line in summarize(reader.records, truth).lines():
            console.say(line)

        console.pause("stop the stream")
        console.step("Stopping the stream: spec.state STOPPED (the same WML deployment is stopped, not deleted)")
        patch = json.dumps({"spec": {"state": "STOPPED"}})
        console.command(f"kubectl patch sdep {st.name} -n {st.namespace} --type=merge -p '{patch}'")
        kubectl("patch", "sdep", st.name, "-n", st.namespace, "--type=merge", "-p", patch)
        took = watch(kubectl, console, st.namespace, st.name,
                     ["jsonpath={.status.wmlStatus}=STOPPED", "condition=Ready"])
        console.say(f"STOPPED and Ready after {took:.1f} s")
        before = len(reader.records)
        produce(kafka, st.input_topic, second)
        console.say(f"sent {len(second)} more tweets to {st.input_topic} while STOPPED; watching "
                    f"{st.output_topic} for {QUIET_SECONDS:.0f} s ...")
        late = reader.poll(QUIET_SECONDS)
        if late:
            raise DemoError(f"{len(late)} records were scored while the stream was STOPPED")
        console.say(f"while STOPPED: 0 records scored in {QUIET_SECONDS:.0f} s "
                    f"({len(second)} tweets waiting on {st.input_topic})")

        console.pause("start the stream again")
        console.step("Starting it again: spec.state RUNNING (it resumes where it stopped)")
        patch = json.dumps({"spec": {"state": "RUNNING"}})
        console.command(f"kubectl patch sdep {st.name} -n {st.namespace} --type=merge -p '{patch}'")
        kubectl("patch", "sdep", st.name, "-n", st.namespace, "--type=merge", "-p", patch)
        took = watch(kubectl, console, st.namespace, st.name,
                     ["jsonpath={.status.wmlStatus}=RUNNING", "condition=Ready"])
        console.say(f"RUNNING and Ready after {took:.1f} s; the tweets sent meanwhile:")
        show_records(console, reader, len(second), truth, sample=5)
        reader.poll(2.0)  # anything scored a second time would show up now
        check_exactly_once(console, reader, before, first + second)
        console.say()
        for line in summarize(reader.records, truth).lines():
            console.say(line)
    finally:
        reader.close()


def check_exactly_once(console: Console, reader: OutputReader, before: int, sent: list[Tweet]) -> None:
    twice = sorted(k for k, n in reader.by_key.items() if n > 1)
    missing = sorted({t.id for t in sent} - set(reader.by_key))
    extra = sorted(set(reader.by_key) - {t.id for t in sent})
    if twice or missing or extra:
        raise DemoError(f"exactly-once broken: scored twice {twice[:10]}, missing {missing[:10]}, "
                        f"unexpected {extra[:10]}")
    console.say(f"after RUNNING again: {len(reader.records) - before} records sent while stopped were scored; "
                f"{len(sent)} tweets in, {len(reader.records)} scored, none twice, none missing")


def look_around(console: Console, layout: Layout, st: DemoState) -> None:
    q = shlex.quote
    creds = "{{.data.username|base64decode}}:{{.data.password|base64decode}}"
    parse_json = 'import json, sys; print(json.load(sys.stdin)["token"])'
    down = "make demo-down"
    if layout.root != DEFAULT_DIR:
        down = f"WSO_DEMO_DIR={q(str(layout.root))} make demo-down   (or: wso-demo down)"
    console.step("The demo keeps running. To look around, in this shell:")
    console.say(f"""\
export KUBECONFIG={q(st.kubeconfig)} PATH={q(str(layout.bin))}:$PATH
kubectl get sdep -A -o wide                    # the resource, as the operator reports it
kubectl describe sdep -n {st.namespace} {st.name}    # conditions and events
kubectl patch sdep -n {st.namespace} {st.name} --type=merge -p '{{"spec": {{"state": "STOPPED"}}}}'
kubectl auth can-i --list --as=system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}

The WML service: {st.wml_url} (OpenAPI: {st.wml_url}/docs), instance {st.instance_id}
CREDS=$(kubectl get secret -n {st.namespace} wml-credentials -o go-template='{creds}')
TOKEN=$(curl -s -u "$CREDS" {st.wml_url}/v3/identity/token | python3 -c '{parse_json}')
curl -s -H "Authorization: Bearer $TOKEN" {st.wml_url}/v3/wml_instances/{st.instance_id}/deployments

Your own tweets in, scores out (topics {st.input_topic} -> {st.output_topic}):
wso-demo send "What a great day" "This is awful"
wso-demo scores --follow

Logs: {layout.operator_dir}/operator.log, {layout.wml_dir}/logs/wml-server.log, {layout.root}/kafka/logs/
Stop everything and remove {layout.root}: {down}""")


def up(layout: Layout, console: Console, config: PlatformConfig, wml_port: int) -> int:
    state = layout.state()
    procs = layout.processes()
    if layout.is_demo_dir() and state and all(procs.values()):
        console.step(f"A demo is already running in {layout.root} (started {state.started}); nothing to start")
        show_status(layout, console, state)
        return 0
    if layout.root.exists() and any(layout.root.iterdir()) and not layout.is_demo_dir():
        raise DemoError(f"{layout.root} exists and is not the demo's folder: set WSO_DEMO_DIR to another path")

    problems = check_prerequisites(config)
    if problems:
        raise MissingPrerequisite("\n  ".join(["the local platform is not ready:", *problems]))
    if layout.is_demo_dir():
        stale = [name for name, ok in procs.items() if not ok]
        why = f"{', '.join(stale)} stopped" if stale else "its setup did not finish"
        console.step(f"Cleaning up the previous demo in {layout.root} ({why}) to start afresh")
        down(layout, console)
    if wml_port:
        check_port_free(wml_port)

    console.say("The scenario: a marketing team wants the opinion of tweets on a topic. A published sentiment "
                "model runs as a stream:\ntweets in on one Kafka topic, POSITIVE/NEGATIVE out on another, "
                "declared as a StreamingDeployment and watched with kubectl.")
    try:
        console.step("Loading the tweets")
        tweets = polar_tweets(say=console.say)
        picked = pick_tweets(tweets, BEFORE_STOP + WHILE_STOPPED)
        console.say(f"{DATA_FILE}: {len(tweets)} tweets whose raters leaned positive or negative "
                    f"(mean rating not 0); {len(picked)} picked for the demo")
        run = start_platform(layout, console, config, wml_port)
        scenario(run, console, picked)
    except (DemoError, StartFailed, TweetsUnavailable, KafkaException) as exc:
        if layout.is_demo_dir():
            raise DemoError(f"{exc}\n(the demo's processes are left running for a look: logs in {layout.root}; "
                            "`make demo-down` stops them)") from None
        raise
    look_around(console, layout, run.state)
    console.say(f"\ndemo done in {console.elapsed()}")
    return 0


# --- status, down, send, scores ----------------------------------------------------------------------------


def show_status(layout: Layout, console: Console, state: DemoState | None) -> None:
    for name, ok in layout.processes().items():
        console.say(f"{name:<36} {'running' if ok else 'stopped'}")
    if state and layout.kube.running():
        kubectl = Kubectl(Path(state.kubectl), Path(state.kubeconfig))
        console.command("kubectl get sdep -A -o wide")
        console.say(kubectl("get", "sdep", "-A", "-o", "wide", check=False).stdout.rstrip())
        look_around(console, layout, state)


def down(layout: Layout, console: Console) -> int:
    if not layout.root.exists():
        console.say(f"no demo in {layout.root}: nothing to stop")
        return 0
    if not layout.is_demo_dir():
        raise DemoError(f"{layout.root} is not the demo's folder (no {MARKER} in it); leaving it alone")
    started = time.monotonic()
    stopped = []
    if process.stop_pid_file(layout.operator_dir / "operator.pid", timeout=20):
        stopped.append("operator")
    if process.stop_pid_file(layout.wml_dir / "wml-server.pid", timeout=20):
        stopped.append("WML service")
    if layout.kafka.running():
        stopped.append("Kafka")
    layout.kafka.destroy()
    if layout.kube.running():
        stopped.append("Kubernetes")
    layout.kube.destroy()
    shutil.rmtree(layout.root, ignore_errors=True)
    console.say(f"stopped: {', '.join(stopped) or 'nothing was running'}; removed {layout.root} "
                f"({time.monotonic() - started:.1f} s)")
    return 0


def running_kafka(layout: Layout) -> tuple[KafkaInfo, DemoState]:
    state = layout.state()
    if not state or not layout.kafka.running():
        raise DemoError(f"no demo is running in {layout.root}: start one with `make demo`")
    return layout.kafka.info(), state


def send(layout: Layout, console: Console, texts: list[str]) -> int:
    kafka, state = running_kafka(layout)
    tweets = [Tweet(f"own-{uuid.uuid4().hex[:8]}", 0.0, text) for text in texts]
    produce(kafka, state.input_topic, tweets)
    console.say(f"sent {len(tweets)} to {state.input_topic}: " + ", ".join(t.id for t in tweets))
    return 0


def scores(layout: Layout, console: Console, follow: bool) -> int:
    kafka, state = running_kafka(layout)
    reader = OutputReader(kafka, state.output_topic)
    try:
        quiet_since = time.monotonic()
        while follow or time.monotonic() - quiet_since < 3.0:
            new = reader.poll(0.5)
            for rec in new:
                console.say(f"{rec.get('id', '?'):<14} {scored_line(rec)}")
            if new:
                quiet_since = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
    return 0


# --- entry point -------------------------------------------------------------------------------------------


def _wml_port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise DemoError(f"WSO_DEMO_WML_PORT must be a port number, got {raw!r}") from None
    if not 0 <= port < 65536:
        raise DemoError(f"WSO_DEMO_WML_PORT must be 0..65535, got {port}")
    return port


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m localplatform.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "send", "scores"])
    parser.add_argument("texts", nargs="*", help="send: the tweets to send")
    parser.add_argument("--dir", type=Path, default=default_dir(),
                        help="the demo's folder (default $WSO_DEMO_DIR or %(default)s)")
    parser.add_argument("--ci", action="store_true", default=_truthy("WSO_DEMO_NONINTERACTIVE") or _truthy("CI"),
                        help="never pause, no colours (also WSO_DEMO_NONINTERACTIVE=1 or CI=true)")
    parser.add_argument("--follow", action="store_true", help="scores: keep reading until Ctrl-C")
    parser.add_argument("--wml-port", default=os.environ.get("WSO_DEMO_WML_PORT", str(DEFAULT_WML_PORT)),
                        help="the WML service's port (default $WSO_DEMO_WML_PORT or %(default)s; 0: any free one)")
    return parser.parse_args(argv)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def run(args: argparse.Namespace, layout: Layout, console: Console) -> int:
    if args.command == "up":
        return up(layout, console, layout.kube.config, _wml_port(args.wml_port))
    if args.command == "down":
        return down(layout, console)
    if args.command == "status":
        console.step(f"The demo in {layout.root}")
        show_status(layout, console, layout.state())
        return 0 if all(layout.processes().values()) else 3
    if args.command == "send":
        return send(layout, console, args.texts)
    return scores(layout, console, args.follow)


def main(argv: list[str] | None = None) -> int:
    """Expected failures print `error: ...` (what to install, free or run) and exit 1 or 2; no traceback."""
    args = parse_args(argv)
    tty = sys.stdout.isatty() and sys.stdin.isatty()
    console = Console(color=tty and not args.ci and not os.environ.get("NO_COLOR"), interactive=tty and not args.ci)
    layout = Layout(args.dir.resolve(), PlatformConfig.load())
    try:
        return run(args, layout, console)
    except MissingPrerequisite as exc:
        print(f"error: {exc}\n  then run `make demo` again (it builds and caches what the platform needs)",
              file=sys.stderr)
        return 2
    except PortTaken as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (DemoError, StartFailed, TweetsUnavailable, KafkaException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"\ninterrupted; what was started keeps running: `make demo-down` stops it ({layout.root})",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
