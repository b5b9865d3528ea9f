"""Fixtures shared by every suite: the local platform (started once per session) and per-test isolation.

The platform is real: kube-apiserver + etcd (+ the namespace/GC controllers), an Apache Kafka broker and a
Spark standalone cluster, started from the cache that `make platform-build` fills (and pyspark's own Spark).
To run the suites against something already running instead, set:
  KUBECONFIG                    an existing cluster (kind, a real one, or `make platform-up`'s)
  WSO_KAFKA_BOOTSTRAP           an existing broker, with WSO_KAFKA_USERNAME / WSO_KAFKA_PASSWORD and
                                optionally WSO_KAFKA_SECURITY_PROTOCOL (SASL_PLAINTEXT) and
                                WSO_KAFKA_SASL_MECHANISM (PLAIN)
  WSO_SPARK_MASTER              an existing Spark standalone master (spark://host:port), e.g. the one
                                `make platform-up` prints; else the first test that needs Spark starts a
                                cluster (a master and two workers) for the rest of the session
A missing prerequisite is an error, never a skip: a suite that did not run did not pass.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka.admin import AdminClient
from hypothesis import settings as hypothesis_settings
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from wml_localplatform import (
    KafkaBroker,
    KafkaInfo,
    KubeControlPlane,
    KubeInfo,
    PlatformConfig,
    SparkCluster,
    SparkInfo,
)
from wml_localplatform.wmloperator import kubectl_runner
from wml_localplatform.wmlservice import WMLService, WMLUser

# Hypothesis fails an example slower than 200 ms by default: an assertion on time, which a 2-core machine busy with
# something else beside the tests trips (seen once here during a Kubernetes build). The tests assert behaviour.
hypothesis_settings.register_profile("wml-stream-operator", deadline=None)
hypothesis_settings.load_profile("wml-stream-operator")

TESTS = Path(__file__).resolve().parent
SUITES = ("unit", "integration", "e2e", "reliability")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The folder a test lives in is its suite: tests/unit -> @unit, and so on."""
    for item in items:
        parts = Path(str(item.path)).resolve().relative_to(TESTS).parts
        if parts and parts[0] in SUITES:
            item.add_marker(getattr(pytest.mark, parts[0]))


SCANNED_SECRETS: set[str] = set()
# The credentials tests put in deployments (Kafka passwords, Spark tenant secrets): the service stores them, and
# must store them encrypted; no file of a WML data folder may hold one in plaintext (issue 21).
STORED_SECRETS: set[str] = set()


class Figures:
    """What the reliability cases measured, row by row per section; `make reliability` renders them into
    docs/RELIABILITY.md (tests/reliability/report.py). Written to $WSO_RELIABILITY_REPORT when set."""

    def __init__(self) -> None:
        self.sections: dict[str, list[dict[str, object]]] = {}

    def add(self, section: str, **row: object) -> None:
        self.sections.setdefault(section, []).append(row)


@pytest.fixture(scope="session")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Figures]:
    recorded = Figures()
    yield recorded
    text = json.dumps(recorded.sections, indent=2, default=str)
    (tmp_path_factory.getbasetemp() / "figures.json").write_text(text)
    if target := os.environ.get("WSO_RELIABILITY_REPORT"):
        Path(target).write_text(text)


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory, figures: Figures) -> Iterator[None]:
    """After the whole run: no log that the run produced (operator, WML service, Kafka, control plane, demo,
    the fault proxy's record of every WML response, the dumps of each test namespace's events and statuses)
    holds a password the tests handed out, a key of a WML service's key file or a service's token signing key;
    no file of a WML service's data folder holds a stored credential or such a key in plaintext. Torn down last,
    so it sees every log."""
    yield
    from wml_localplatform import wmlservice

    keys = {line.strip() for path in wmlservice.KEY_FILES if path.is_file()
            for line in path.read_text().splitlines() if line.strip()}
    keys |= {key for data, key_file in zip(wmlservice.DATA_DIRS, wmlservice.KEY_FILES, strict=True)
             if (key := signing_key_of(data, key_file))}  # each service's token signing key, from its database
    secrets = SCANNED_SECRETS | set(wmlservice.ISSUED_PASSWORDS) | keys
    leaks = []
    scanned = 0
    for path in tmp_path_factory.getbasetemp().rglob("*.log"):
        text = path.read_text(errors="replace")
        scanned += len(text)
        leaks += [f"{path}: {secret[:3]}..." for secret in secrets if secret and secret in text]
    figures.add("security", check="secret scanner over every log, response record and namespace dump",
                result=f"{len(leaks)} found", detail=f"{len(secrets)} secrets, {scanned / 1e6:.1f} MB scanned")
    stored, files, read = plaintext_in_data_folders(wmlservice.DATA_DIRS, STORED_SECRETS | keys)
    figures.add("security", check="secret scanner over every file of every WML service data folder (raw bytes)",
                result=f"{len(stored)} found", detail=f"{len(STORED_SECRETS)} stored credentials and {len(keys)} "
                                                     f"keys, {files} files, {read / 1e6:.1f} MB scanned")
    trails, trail_files, trail_bytes = plaintext_in_data_folders([], secrets | STORED_SECRETS,
                                                                 files=wmlservice.AUDIT_FILES)
    figures.add("security", check="secret scanner over every WML service's audit trail (raw bytes)",
                result=f"{len(trails)} found", detail=f"{len(secrets | STORED_SECRETS)} secrets, {trail_files} "
                                                     f"trails, {trail_bytes / 1e6:.1f} MB scanned")
    assert not leaks, f"secrets found in logs: {leaks}"
    assert not stored, f"credentials stored in plaintext in a WML data folder: {stored}"
    assert not trails, f"secrets found in a WML service's audit trail: {trails}"


def signing_key_of(data_dir: Path, key_file: Path) -> str | None:
    """The token signing key a service keeps encrypted in its database, or None (no database or no such row, or a
    key file that does not open it: a test of a wrong key)."""
    from wml_server.vault import KeyFileError, Vault

    database = data_dir / "wml.sqlite3"
    if not database.is_file() or not key_file.is_file():
        return None
    wal = database.with_name(database.name + "-wal").exists()  # as atrest.check_key: no file made by reading
    conn = sqlite3.connect(f"file:{database}?{'mode=ro' if wal else 'immutable=1'}", uri=True)
    try:
        row = conn.execute("SELECT token FROM signing_key").fetchone()
        return base64.b64decode(Vault(key_file).decrypt(row[0])).decode("latin-1") if row else None
    except (sqlite3.Error, KeyFileError):
        return None
    finally:
        conn.close()


def plaintext_in_data_folders(folders: list[Path], secrets: set[str],
                              files: Sequence[Path] = ()) -> tuple[list[str], int, int]:
    """(where a secret appears in plaintext, files read, bytes read) over every file of the folders (the database,
    its WAL and journal, the Spark drivers' state, the audit trail, whatever else a service wrote there) and the
    files named."""
    found: list[str] = []
    count = read = 0
    wanted = [(secret, secret.encode()) for secret in secrets if secret]
    named = [p for p in dict.fromkeys(files) if p.is_file()]
    for path in named + [p for folder in dict.fromkeys(folders) for p in folder.rglob("*") if p.is_file()]:
        data = path.read_bytes()
        count, read = count + 1, read + len(data)
        found += [f"{path}: {secret[:3]}..." for secret, raw in wanted if raw in data]
    return found, count, read


@pytest.fixture(scope="session")
def platform_config() -> PlatformConfig:
    return PlatformConfig.load()


@pytest.fixture(scope="session")
def kube_plane(platform_config: PlatformConfig,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeControlPlane | None]:
    """The control plane this run started (the fault suite restarts its parts), or None with KUBECONFIG."""
    if os.environ.get("KUBECONFIG"):
        yield None
        return
    plane = KubeControlPlane(platform_config, tmp_path_factory.mktemp("kube"))
    try:
        plane.start()
        yield plane
    finally:
        plane.destroy()


@pytest.fixture(scope="session")
def kube(kube_plane: KubeControlPlane | None) -> KubeInfo:
    if kube_plane is not None:
        return kube_plane.info()
    kubeconfig = os.environ["KUBECONFIG"]
    api = k8s_config.new_client_from_config(config_file=kubeconfig)
    return KubeInfo(kubeconfig=kubeconfig, server=api.configuration.host, version="external",
                    ready_seconds=0.0, apiserver_ready_seconds=0.0)


@pytest.fixture(scope="session")
def kafka_broker(platform_config: PlatformConfig,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker | None]:
    """The broker this run started (the fault suite restarts it), or None with WSO_KAFKA_BOOTSTRAP."""
    if KafkaInfo.from_env():
        yield None
        return
    broker = KafkaBroker(platform_config, tmp_path_factory.mktemp("kafka"))
    try:
        SCANNED_SECRETS.update(u.password for u in broker.start().users)
        yield broker
    finally:
        broker.destroy()


@pytest.fixture(scope="session")
def kafka(kafka_broker: KafkaBroker | None, figures: Figures) -> Iterator[KafkaInfo]:
    if kafka_broker is not None:
        info = kafka_broker.info()
    else:
        external = KafkaInfo.from_env()
        assert external is not None
        info = external
    STORED_SECRETS.update(u.password for u in info.users)  # what the tests' deployments connect with
    yield info
    # What the run's deployments left on the broker (issue 14: deleting a deployment deletes its group).
    deadline = time.monotonic() + 30  # a deletion's cleanup runs in the background of the service
    while (left := sorted(wml_groups(info))) and kafka_broker is not None and time.monotonic() < deadline:
        time.sleep(1.0)
    figures.add("leftovers", wml_consumer_groups_left=len(left), groups=", ".join(left[:10]) or "none")
    # On the run's own broker every group is the run's: each deployment the suites made was deleted.
    assert kafka_broker is None or not left, (f"consumer groups of WML deployments left on the broker: "
                                              f"{describe_groups(info, left[:10])}")


@pytest.fixture(scope="session")
def spark_cluster(platform_config: PlatformConfig,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster | None]:
    """The Spark cluster this run started (only when a test asks for it), or None with WSO_SPARK_MASTER."""
    if SparkInfo.from_env():
        yield None
        return
    cluster = SparkCluster(platform_config, tmp_path_factory.mktemp("spark"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def spark(spark_cluster: SparkCluster | None) -> SparkInfo:
    if spark_cluster is not None:
        return spark_cluster.info()
    external = SparkInfo.from_env()
    assert external is not None
    return external


@pytest.fixture(scope="session")
def spark_master(spark: SparkInfo) -> str:
    """The master URL of the run's Spark cluster: what a deployment's Spark credentials name to run on it."""
    return spark.master_url


@pytest.fixture(scope="session")
def mllib_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Spark MLlib PipelineModel as a user uploads it (.tar.gz), trained once per run (tests/spark_model.py)."""
    from tests.spark_model import mllib_model_archive

    return mllib_model_archive(tmp_path_factory.mktemp("mllib"))


def describe_groups(kafka: KafkaInfo, groups: list[str]) -> str:
    """Each group's state, members and the topics it has offsets in: which test left it (topics carry its name)."""
    admin = AdminClient(kafka.client_config())
    lines = []
    for group in groups:
        try:
            described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(15)
            offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                        request_timeout=10)[group].result(15)
            topics = sorted({tp.topic for tp in offsets.topic_partitions or []})
            lines.append(f"{group} ({described.state}, {len(described.members)} members, offsets in {topics})")
        except (concurrent.futures.TimeoutError, KafkaException) as exc:
            lines.append(f"{group} (not described: {exc})")
    return "; ".join(lines)


def wml_groups(kafka: KafkaInfo) -> set[str]:
    """The consumer groups of WML deployments (`wml-<deployment id>`) on the broker."""
    # A listing can miss its deadline while the broker is busy (a group's coordinator loading, a loaded CI
    # machine): that says nothing about the groups, so ask again rather than fail the test on it.
    admin = AdminClient(kafka.client_config())
    for attempt in range(3):
        try:
            listed = admin.list_consumer_groups(request_timeout=20).result(25)
            return {g.group_id for g in listed.valid if g.group_id.startswith("wml-")}
        except (concurrent.futures.TimeoutError, KafkaException):
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def k8s_api(kube: KubeInfo) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=kube.kubeconfig)


def fresh_namespace(k8s_api: k8s.ApiClient, dumps: Path, prefix: str = "wso-test") -> Iterator[str]:
    """A namespace for one test. Afterwards its events and StreamingDeployments are dumped into `dumps` (for
    the secret scanner: what users see with kubectl must not hold a secret either), then it is deleted."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(k8s_api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(
        name=name, labels={"app.kubernetes.io/part-of": "wml-stream-operator-tests"})))
    yield name
    dump_namespace(k8s_api, name, dumps / f"{name}.log")
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except k8s.ApiException as exc:
        if exc.status != 404:  # a test that deleted it itself
            raise


def dump_namespace(k8s_api: k8s.ApiClient, namespace: str, dest: Path) -> None:
    events = k8s.CoreV1Api(k8s_api).list_namespaced_event(namespace)
    try:
        sdeps = k8s.CustomObjectsApi(k8s_api).list_namespaced_custom_object(
            "wmlstream.dev", "v1alpha1", namespace, "streamingdeployments")["items"]
    except k8s.ApiException:  # the CRD is not installed in this run
        sdeps = []
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("w") as out:
        for event in events.items:
            out.write(f"event {event.type} {event.reason} {event.message}\n")
        for obj in sdeps:
            out.write(f"sdep {obj['metadata']['name']} {json.dumps(obj.get('status', {}))}\n")


@pytest.fixture(scope="session")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cluster-dumps")


@pytest.fixture
def namespace(k8s_api: k8s.ApiClient, dumps: Path) -> Iterator[str]:
    """A fresh namespace per test (matching the e2e operator's wso-test-*), deleted afterwards."""
    yield from fresh_namespace(k8s_api, dumps)


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def kubectl(kube: KubeInfo, platform_config: PlatformConfig) -> Kubectl:
    return kubectl_runner(platform_config.kubectl(), kube.kubeconfig, error=AssertionError)


@pytest.fixture
def kafka_topic(kafka: KafkaInfo) -> Iterator[Callable[..., str]]:
    """Creates uniquely named topics for one test and deletes them afterwards."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(kafka.client_config(kafka.users[0].name))
    made: list[str] = []

    def create(prefix: str = "t", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
        admin.create_topics([topic])[name].result(30)
        made.append(name)
        return name

    yield create
    if made:
        for future in admin.delete_topics(made).values():
            future.result(30)


def _wml_service(directory: Path, **env: str) -> Iterator[WMLService]:
    service = WMLService(directory, env={"WML_SERVER_KAFKA_UNREACHABLE_TIMEOUT": "15", **env})
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def wml_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WMLService]:
    """One WML service process running real streams; tests isolate themselves with a user of a fresh instance."""
    yield from _wml_service(tmp_path_factory.mktemp("wml"))


@pytest.fixture(scope="session")
def wml_api_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WMLService]:
    """A WML service in accept-only mode (no Kafka clients): for tests of the API itself."""
    yield from _wml_service(tmp_path_factory.mktemp("wml-api"), WML_SERVER_RUN_STREAMS="false",
                            WML_SERVER_DEPLOYMENT_LIMIT="5")


@pytest.fixture
def make_wml_service(tmp_path: Path) -> Iterator[Callable[..., WMLService]]:
    """Starts services with given settings (environment variables) for one test; stops them after."""
    started: list[WMLService] = []

    def make(ca_file: Path | None = None, **env: str) -> WMLService:
        service = WMLService(tmp_path / f"wml-{len(started)}", env=env, ca_file=ca_file)
        service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


@pytest.fixture
def wml_user(wml_api_service: WMLService) -> WMLUser:
    """A user of the accept-only service, bound to an instance of its own."""
    return wml_api_service.add_user()
