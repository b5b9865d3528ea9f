"""A real Apache Kafka broker on 127.0.0.1: KRaft mode, one node, SASL/PLAIN, no topic auto-creation."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wml_localplatform import process
from wml_localplatform.config import PlatformConfig

# The broker authenticates itself as the first user; the second is what the WML service and the demo use,
# so a test can tell one identity's credentials from another's.
USER_NAMES = ("admin", "wml")

_LOG4J2 = """\
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.controller
        level: WARN
"""


@dataclass(frozen=True)
class KafkaUser:
    name: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class KafkaInfo:
    bootstrap: str
    users: list[KafkaUser]
    version: str
    ready_seconds: float
    security_protocol: str = "SASL_PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    # With a local node (node.py): the listener its pods reach, on the node's address (None: none).
    pods_bootstrap: str | None = None

    def user(self, name: str) -> KafkaUser:
        return next(u for u in self.users if u.name == name)

    def client_config(self, user: str | None = None, **extra: Any) -> dict[str, Any]:
        """A confluent-kafka (librdkafka) configuration for one of the broker's users (default: the first)."""
        creds = self.user(user) if user else self.users[0]
        return {"bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol,
                "sasl.mechanism": self.sasl_mechanism, "sasl.username": creds.name,
                "sasl.password": creds.password, **extra}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> KafkaInfo:
        data = json.loads(text)
        data["users"] = [KafkaUser(**u) for u in data["users"]]
        return cls(**data)

    @classmethod
    def from_env(cls) -> KafkaInfo | None:
        """The broker the environment names (WSO_KAFKA_BOOTSTRAP with WSO_KAFKA_USERNAME / WSO_KAFKA_PASSWORD,
        WSO_KAFKA_SECURITY_PROTOCOL and WSO_KAFKA_SASL_MECHANISM if not SASL_PLAINTEXT / PLAIN), or None: then
        the caller starts a broker of its own."""
        bootstrap = os.environ.get("WSO_KAFKA_BOOTSTRAP")
        if not bootstrap:
            return None
        user = KafkaUser(os.environ["WSO_KAFKA_USERNAME"], os.environ["WSO_KAFKA_PASSWORD"])
        return cls(bootstrap=bootstrap, users=[user], version="external", ready_seconds=0.0,
                   security_protocol=os.environ.get("WSO_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                   sasl_mechanism=os.environ.get("WSO_KAFKA_SASL_MECHANISM", "PLAIN"))


def _jaas(users: list[KafkaUser]) -> str:
    admin = users[0]
    entries = " ".join(f'user_{u.name}="{u.password}"' for u in users)
    return (f'org.apache.kafka.common.security.plain.PlainLoginModule required '
            f'username="{admin.name}" password="{admin.password}" {entries};')


def server_properties(data_dir: Path, port: int, controller_port: int, users: list[KafkaUser],
                      pods: str | None = None) -> str:
    """`pods`: host:port of a second listener for the local node's pods, whose 127.0.0.1 is their own."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": _jaas(users),
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.dirs": str(data_dir),
        "log.retention.hours": "24",
    }
    if pods:
        props["listeners"] += f",PODS://{pods}"
        props["advertised.listeners"] += f",PODS://{pods}"
        props["listener.security.protocol.map"] += ",PODS:SASL_PLAINTEXT"
        props["listener.name.pods.plain.sasl.jaas.config"] = _jaas(users)
    return "".join(f"{k}={v}\n" for k, v in props.items())


class KafkaBroker:
    """`pods_host`: also listen there for the local node's pods (node.NODE_IP; the node must be up)."""

    def __init__(self, config: PlatformConfig, directory: Path, *, pods_host: str | None = None) -> None:
        self.config = config
        self.dir = directory
        self.pods_host = pods_host
        self.pid_file = directory / "kafka.pid"
        self.info_path = directory / "info.json"
        self.log = directory / "logs" / "kafka.log"
        self._argv: list[str | os.PathLike[str]] = []

    def running(self) -> bool:
        return process.is_running(self.pid_file)

    def info(self) -> KafkaInfo:
        return KafkaInfo.from_json(self.info_path.read_text())

    def start(self, timeout: float = 120.0) -> KafkaInfo:
        if self.running() and self.info_path.is_file():
            return self.info()
        self.stop()
        libs = self.config.kafka_libs()
        java = self.config.java()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        users = [KafkaUser(name, secrets.token_urlsafe(18)) for name in USER_NAMES]
        port, controller_port = process.free_port(), process.free_port()
        props = self.dir / "server.properties"
        pods = f"{self.pods_host}:{process.free_port()}" if self.pods_host else None
        props.write_text(server_properties(self.dir / "data", port, controller_port, users, pods))
        props.chmod(0o600)
        log4j = self.dir / "log4j2.yaml"
        log4j.write_text(_LOG4J2)
        classpath = f"{libs}/*"
        # C1 only (TieredStopAtLevel=1): on 2 cores the C2 compiler keeps a core busy for minutes after the
        # broker starts, slowing every client beside it (figures in docs/PERFORMANCE.md); C1's code is a little
        # slower, which a local broker does not notice.
        jvm: list[str | os.PathLike[str]] = [java, "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
                                             "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
                                             "-cp", classpath]
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

        started = time.monotonic()
        fmt_log = self.dir / "logs" / "format.log"
        fmt = process.start("kafka.tools.StorageTool",
                            [*jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", props],
                            fmt_log, self.dir / "format.pid")
        if fmt.wait(timeout=120) != 0:
            raise process.StartFailed(f"formatting Kafka storage failed:\n{process.log_tail(fmt_log)}")
        (self.dir / "format.pid").unlink(missing_ok=True)

        self._argv = [*jvm, "kafka.Kafka", props]
        broker = process.start("kafka.Kafka", self._argv, self.log, self.pid_file)
        info = KafkaInfo(bootstrap=f"127.0.0.1:{port}", users=users, version=self.config.kafka_version,
                         ready_seconds=0.0)
        process.wait_ready("Kafka broker", lambda: _metadata_ok(info), broker, self.log, timeout)
        info = KafkaInfo(bootstrap=info.bootstrap, users=users, version=info.version,
                         ready_seconds=round(time.monotonic() - started, 2), pods_bootstrap=pods)
        self.info_path.write_text(info.to_json())
        self.info_path.chmod(0o600)
        return info

    def restart(self, down_seconds: float = 0.0, kill: bool = False, timeout: float = 120.0) -> float:
        """Stops the broker (a clean shutdown, or kill -9 when kill), leaves it down for down_seconds and
        starts it again on the same ports and data; returns seconds from relaunch to answering metadata."""
        if not self._argv:
            raise ValueError("cannot restart a broker this object did not start")
        info = self.info()
        if kill:
            process.kill_pid_file(self.pid_file)
        else:
            self.stop()
        time.sleep(down_seconds)
        broker = process.start("kafka.Kafka", self._argv, self.log, self.pid_file)
        return process.wait_ready("Kafka broker", lambda: _metadata_ok(info), broker, self.log, timeout)

    def stop(self) -> None:
        process.stop_pid_file(self.pid_file, timeout=20.0)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _metadata_ok(info: KafkaInfo) -> bool:
    from confluent_kafka.admin import AdminClient

    # librdkafka logs every refused connection to stderr: ask it only once the port is open.
    if not process.port_open(int(info.bootstrap.rsplit(":", 1)[1])):
        return False
    admin = AdminClient(info.client_config("admin", **{"socket.timeout.ms": 2000}))
    metadata = admin.list_topics(timeout=2)
    return bool(metadata.brokers)
