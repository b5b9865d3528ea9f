"""In the cluster (issue 20): `kubectl apply -k` of deploy/ with components/wml-server runs the operator and the
service as pods on a real node (kubelet, containerd, runc), from the images built here. The operator talks to
the apiserver with its mounted ServiceAccount token under deploy/'s RBAC; the service keeps its data on a
PersistentVolume. On them: the lifecycle (create, flip, re-create, delete), a deletion of the operator's pod
mid-change (the active one of its two replicas: the standby takes over), and a change of the operator's
Deployment rolled out (RollingUpdate: an operator pod is up throughout, one holds the Lease).

The module starts its own control plane (with the controllers a node needs), node and broker (with a listener
on the node's address for the pods): localplatform/wml_localplatform/node.py and incluster.py say why each
part is as it is. Root only, as a kubelet is.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient, NewTopic
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.conftest import SCANNED_SECRETS, STORED_SECRETS, wml_groups
from tests.e2e.conftest import MODEL, StreamEnv, wait_for
from tests.e2e.test_handover import THREE_CLASSES, scored
from tests.e2e.test_lifecycle import Output, condition, produce, sdep
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_localplatform import wmlservice
from wml_localplatform.config import PlatformConfig, read_versions
from wml_localplatform.incluster import NAMESPACE, SERVICE_IP, SERVICE_PORT, InClusterLogin, install
from wml_localplatform.kafka import KafkaBroker, KafkaInfo
from wml_localplatform.kube import KubeControlPlane
from wml_localplatform.node import NODE_IP, LocalNode
from wml_localplatform.wmlservice import WMLUser

OPERATOR = "app.kubernetes.io/name=wml-stream-operator"
TEAM = "team-a"


@dataclass
class Cluster:
    kubectl: Callable[..., subprocess.CompletedProcess[str]]
    api: k8s.ApiClient
    kafka: KafkaInfo
    login: InClusterLogin
    volume: Path
    ca_file: Path  # the CA of the service's certificate (deploy/bootstrap-tls.sh)

    def wml(self) -> WMLClient:
        """From this machine, at the Service's IP (in the certificate: bootstrap-tls.sh --san), verified."""
        return WMLClient(f"https://{SERVICE_IP}:{SERVICE_PORT}",
                         WMLCredentials(self.login.username, self.login.password), self.login.instance_id,
                         ca_bundle=str(self.ca_file))

    def operator_pods(self) -> list[k8s.V1Pod]:
        pods: list[k8s.V1Pod] = k8s.CoreV1Api(self.api).list_namespaced_pod(NAMESPACE, label_selector=OPERATOR).items
        return pods

    def leader(self) -> str | None:
        """The pod holding the Lease (its identity is `<pod name>_<pid>`), None when nobody holds it."""
        try:
            lease = k8s.CoordinationV1Api(self.api).read_namespaced_lease("wml-stream-operator", NAMESPACE)
        except k8s.ApiException:
            return None
        holder = lease.spec.holder_identity or ""
        return holder.rsplit("_", 1)[0] or None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    config = PlatformConfig.load()
    versions = read_versions()
    base = tmp_path_factory.mktemp("in-cluster")
    kube = KubeControlPlane(config, base / "kube", for_nodes=True)
    node = LocalNode(config, base / "node", kube.start(), base / "kube" / "pki")
    broker = KafkaBroker(config, base / "kafka", pods_host=NODE_IP)
    try:
        node.start(images=(versions["OPERATOR_IMAGE"], versions["SERVER_IMAGE"]))
        kafka = broker.start()
        for user in kafka.users:
            SCANNED_SECRETS.add(user.password)
            STORED_SECRETS.add(user.password)
        kubeconfig = kube.info().kubeconfig

        def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(config.kubectl()), f"--kubeconfig={kubeconfig}", *args], input=input,
                                  capture_output=True, text=True, check=check, timeout=180)

        done = install(config, kubeconfig, base, versions["OPERATOR_IMAGE"], versions["SERVER_IMAGE"])
        wmlservice.KEY_FILES.append(done.key_file)  # what the scanner must find in no log and no file in plaintext
        wmlservice.ISSUED_PASSWORDS.append(done.login.password)
        wmlservice.DATA_DIRS.append(done.volume)
        wmlservice.AUDIT_FILES.append(done.volume / "audit.jsonl")
        api = k8s_config.new_client_from_config(config_file=kubeconfig)
        yield Cluster(kubectl, api, kafka, done.login, done.volume, done.ca_file)
        _delete_streams(kubectl)
    finally:
        node.stop()
        broker.stop()
        kube.stop()


def _delete_streams(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """What the tests left, deleted by the operator while it still runs (nothing left on the service)."""
    kubectl("delete", "sdep", "--all", "-A", "--timeout=90s", check=False)


@pytest.fixture
def stream(cluster: Cluster) -> Iterator[StreamEnv]:
    """Topics, the team's Secrets (Kafka at the node's listener) and what produce/Output need; no spec.wml: the
    resource uses the operator's default endpoint, the in-cluster service."""
    stamp = f"{time.monotonic_ns() % 10**9}"
    source, target = f"in-{stamp}", f"out-{stamp}"
    admin = AdminClient(cluster.kafka.client_config())
    for future in admin.create_topics([NewTopic(source, 1, 1), NewTopic(target, 1, 1)]).values():
        future.result(30)
    user = cluster.kafka.user("wml")
    cluster.kubectl("create", "namespace", TEAM, check=False)
    docs = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka", "namespace": TEAM},
             "stringData": {"kafka_brokers_sasl": json.dumps([cluster.kafka.pods_bootstrap]), "user": user.name,
                            "password": user.password, "security_protocol": "SASL_PLAINTEXT"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "spark", "namespace": TEAM},
             "stringData": {"credentials.json": json.dumps({
                 "tenant_id": "t1", "tenant_id_full": "t1-full", "cluster_master_url": "https://spark.invalid",
                 "instance_id": stamp, "tenant_secret": f"spark-{stamp}", "plan": "standard"})}}]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    wml_user = WMLUser(cluster.login.username, cluster.login.password, cluster.login.instance_id)
    yield StreamEnv(TEAM, source, target, wml_user, None, cluster.kafka)  # type: ignore[arg-type]
    _delete_streams(cluster.kubectl)


def manifest(env: StreamEnv, **spec: object) -> str:
    return json.dumps({
        "apiVersion": "wmlstream.dev/v1alpha1", "kind": "StreamingDeployment",
        "metadata": {"name": "tweets", "namespace": env.namespace},
        "spec": {"state": "RUNNING", "modelId": MODEL,
                 "sparkCredentialsSecretRef": {"name": "spark", "key": "credentials.json"},
                 "input": {"topic": env.input_topic, "connectionSecretRef": {"name": "kafka"}},
                 "output": {"topic": env.output_topic, "connectionSecretRef": {"name": "kafka"}}, **spec}})


def status(cluster: Cluster) -> dict[str, Any]:
    return dict(sdep(cluster.api, TEAM, "tweets").get("status") or {})


def ready(cluster: Cluster) -> None:
    cluster.kubectl("wait", "--for=condition=Ready", "--timeout=120s", "-n", TEAM, "sdep/tweets")


def running(cluster: Cluster, env: StreamEnv, out: Output, records: int) -> tuple[list[str], str]:
    """`records` tweets, then the resource applied RUNNING and all of them scored: their keys, its deployment."""
    first = [f"a{i}" for i in range(records)]
    produce(env, first)
    cluster.kubectl("apply", "-f", "-", input=manifest(env))
    ready(cluster)
    scored(out, first)
    return first, str(status(cluster)["deploymentId"])


def recreated(cluster: Cluster, old: str, timeout: float = 90) -> str:
    found = wait_for("the re-created deployment", lambda: status(cluster).get("deploymentId") not in (None, old)
                     and status(cluster)["deploymentId"], timeout=timeout)
    ready(cluster)
    return str(found)


def operator_log(cluster: Cluster) -> str:
    return cluster.kubectl("logs", "-n", NAMESPACE, "deployment/wml-stream-operator", check=False).stdout


def test_the_pods_run_as_deploy_declares_them_with_green_probes(cluster: Cluster) -> None:
    core = k8s.CoreV1Api(cluster.api)
    pods = core.list_namespaced_pod(NAMESPACE).items
    assert sorted(p.metadata.labels["app.kubernetes.io/name"] for p in pods) == [
        "wml-server", "wml-stream-operator", "wml-stream-operator"]
    for pod in pods:
        ready_condition = next(c for c in pod.status.conditions if c.type == "Ready")
        assert ready_condition.status == "True", pod.metadata.name
        assert all(s.restart_count == 0 and s.ready for s in pod.status.container_statuses), pod.metadata.name
        assert pod.spec.node_name == "wso-node"
        for container in pod.spec.containers:
            assert container.liveness_probe is not None
            if pod.metadata.labels["app.kubernetes.io/name"] == "wml-server":
                assert container.liveness_probe.http_get.scheme == "HTTPS"
            assert container.security_context.read_only_root_filesystem is True
            assert container.security_context.capabilities.drop == ["ALL"]
    # The namespace enforces the restricted Pod Security standard; the pods were admitted under it.
    labels = core.read_namespace(NAMESPACE).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    (server,) = (p for p in pods if p.metadata.labels["app.kubernetes.io/name"] == "wml-server")
    assert server.spec.containers[0].readiness_probe is not None  # out of the Service while it cannot answer
    # Two operator replicas, both Ready (the standby serves /healthz), exactly one of them holding the Lease.
    operators = cluster.operator_pods()
    assert cluster.leader() in {p.metadata.name for p in operators}
    operator = operators[0]
    assert operator.spec.service_account_name == "wml-stream-operator"
    assert any(v.projected is not None for v in operator.spec.volumes), "no ServiceAccount token mounted"
    # The service's data is on the PersistentVolume: its database, encrypted (the session's scanner reads it).
    assert (cluster.volume / "wml.sqlite3").is_file()
    # The operator's default endpoint is the component's own HTTPS URL, verified with the default CA Secret.
    env = {e.name: e.value for e in operator.spec.containers[0].env if e.value is not None}
    assert env["WML_OPERATOR_WML_URL"] == "https://wml-server.wml-stream-operator.svc:9443"
    assert env["WML_OPERATOR_WML_CA_SECRET"] == "wml-stream-operator/wml-server-tls"


def test_the_lifecycle_create_flip_recreate_delete(cluster: Cluster, stream: StreamEnv) -> None:
    env = stream
    out = Output(env)
    try:
        first, old = running(cluster, env, out, 40)
        assert [d.id for d in cluster.wml().list_instance_deployments()] == [old]

        cluster.kubectl("patch", "sdep", "tweets", "-n", TEAM, "--type=merge", "-p", '{"spec": {"state": "STOPPED"}}')
        wait_for("STOPPED", lambda: status(cluster).get("wmlStatus") == "STOPPED", timeout=60)
        stopped = [f"b{i}" for i in range(20)]
        produce(env, stopped)
        out.drain(3.0)
        assert not set(stopped) & set(out.by_key), "records were scored while STOPPED"
        cluster.kubectl("patch", "sdep", "tweets", "-n", TEAM, "--type=merge", "-p", '{"spec": {"state": "RUNNING"}}')
        scored(out, first + stopped)

        # A model change re-creates the deployment, handing its position over: nothing lost or repeated.
        cluster.kubectl("patch", "sdep", "tweets", "-n", TEAM, "--type=merge", "-p",
                        json.dumps({"spec": {"modelId": THREE_CLASSES}}))
        new = recreated(cluster, old)
        after = [f"c{i}" for i in range(30)]
        produce(env, after)
        scored(out, first + stopped + after)
        assert [d.id for d in cluster.wml().list_instance_deployments()] == [new]
    finally:
        out.close()

    cluster.kubectl("delete", "sdep", "tweets", "-n", TEAM, "--timeout=90s")
    assert cluster.wml().list_instance_deployments() == []
    wait_for("both deployments' consumer groups deleted",
             lambda: not {f"wml-{old}", f"wml-{new}"} & wml_groups(cluster.kafka), timeout=60)


def test_deleting_the_operator_pod_mid_change_converges(cluster: Cluster, stream: StreamEnv) -> None:
    env = stream
    out = Output(env)
    try:
        first, old = running(cluster, env, out, 50)
        doomed = wait_for("the Lease's holder", cluster.leader, timeout=30)
        # The change and, right behind it, the active pod's deletion (as a node drain or `kubectl delete pod`
        # does): the standby takes over, and the ReplicaSet starts a new standby.
        cluster.kubectl("patch", "sdep", "tweets", "-n", TEAM, "--type=merge", "-p",
                        json.dumps({"spec": {"modelId": THREE_CLASSES}}))
        cluster.kubectl("delete", "pod", "-n", NAMESPACE, str(doomed), "--wait=false")
        during = [f"b{i}" for i in range(50)]
        produce(env, during)
        wait_for("another pod holding the Lease", lambda: cluster.leader() not in (None, doomed), timeout=120)
        new = recreated(cluster, old, timeout=120)
        after = [f"c{i}" for i in range(50)]
        produce(env, after)
        scored(out, first + during + after)
        assert [d.id for d in cluster.wml().list_instance_deployments()] == [new]
        assert condition(sdep(cluster.api, TEAM, "tweets"), "Stalled") is None
    finally:
        out.close()


def test_a_rollout_of_the_operator_keeps_one_active_and_reconciles_after(cluster: Cluster,
                                                                         stream: StreamEnv) -> None:
    env = stream
    cluster.kubectl("apply", "-f", "-", input=manifest(env))
    ready(cluster)
    before = {p.metadata.name for p in cluster.operator_pods()}
    deployment = k8s.AppsV1Api(cluster.api).read_namespaced_deployment("wml-stream-operator", NAMESPACE)
    assert (deployment.spec.replicas, deployment.spec.strategy.type) == (2, "RollingUpdate")
    assert deployment.spec.strategy.rolling_update.max_unavailable == 0
    # A change of the pod template (what an image upgrade is): a new pod comes up before an old one goes, and the
    # Lease (released by the old leader on SIGTERM) passes to a pod of the new template.
    cluster.kubectl("patch", "deployment", "wml-stream-operator", "-n", NAMESPACE, "-p", json.dumps(
        {"spec": {"template": {"metadata": {"annotations": {"wmlstream.dev/rollout": str(time.time())}}}}}))
    none_running, holders = 0, []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        pods = cluster.operator_pods()
        names = {p.metadata.name for p in pods}
        if not any(s.state.running for p in pods for s in p.status.container_statuses or []):
            none_running += 1
        holder = cluster.leader()
        if holder and (not holders or holders[-1] != holder):
            holders.append(holder)
        if names and not names & before and holder in names and cluster.kubectl(
                "rollout", "status", "deployment/wml-stream-operator", "-n", NAMESPACE, "--timeout=1s",
                check=False).returncode == 0:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the rollout did not finish:\n{operator_log(cluster)[-3000:]}")
    assert none_running == 0, "no operator pod was running at some point of the rollout"
    assert holders[-1] not in before, holders
    # The new leader reconciles: a flip reaches the service.
    cluster.kubectl("patch", "sdep", "tweets", "-n", TEAM, "--type=merge", "-p", '{"spec": {"state": "STOPPED"}}')
    wait_for("STOPPED by the new leader", lambda: status(cluster).get("wmlStatus") == "STOPPED", timeout=90)
    deployment_id = status(cluster)["deploymentId"]
    assert cluster.wml().get_instance_deployment(deployment_id).status == "STOPPED"
