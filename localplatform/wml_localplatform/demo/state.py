"""Where the demo's things are: its folder (with a marker file), the PID files, what runs, and demo.json."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from wml_localplatform import process
from wml_localplatform.config import PlatformConfig
from wml_localplatform.demo.errors import DemoError
from wml_localplatform.kafka import KafkaBroker, KafkaInfo
from wml_localplatform.kube import KubeControlPlane
from wml_localplatform.spark import SparkCluster
from wml_localplatform.wmloperator import WMLOperator
from wml_localplatform.wmlservice import WMLService

DEFAULT_DIR = Path("/tmp/wml-stream-operator/demo")  # noqa: S108 - beside `make platform-up`'s folder
MARKER = ".wml-stream-operator-demo"  # only a folder holding it is ever removed by `down`


def default_dir() -> Path:
    return Path(os.environ["WSO_DEMO_DIR"]) if os.environ.get("WSO_DEMO_DIR") else DEFAULT_DIR


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
    spark_master: str = ""  # `up --spark`: the cluster the sample's stream runs on; "": the built-in engine


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
        self.spark = SparkCluster(config, root / "spark")  # only with `up --spark`
        self.models_dir = root / "models"  # the data scientist's model, and the HTTP server sharing it
        self.model_server_pid = self.models_dir / "model-server.pid"

    def uses_spark(self) -> bool:
        return self.spark.dir.is_dir()

    def wml(self, port: int = 0, env: dict[str, str] | None = None) -> WMLService:
        return WMLService(self.wml_dir, port=port or None, env=env)

    def operator(self) -> WMLOperator:
        return WMLOperator(self.operator_dir, self.operator_dir / "operator.kubeconfig",
                           env={"WML_OPERATOR_POLL_FAST_SECONDS": "1", "WML_OPERATOR_POLL_SLOW_SECONDS": "10"})

    def processes(self) -> dict[str, bool]:
        """Each process the demo starts, and whether it runs."""
        procs = {"Kubernetes (etcd, kube-apiserver)": self.kube.running(), "Kafka": self.kafka.running()}
        if self.uses_spark():
            procs[f"Spark (master, {self.spark.workers} workers)"] = self.spark.running()
        procs.update({"WML service": process.is_running(self.wml_dir / "wml-server.pid"),
                      "operator": process.is_running(self.operator_dir / "operator.pid")})
        if self.model_server_pid.exists():
            procs["model server"] = process.is_running(self.model_server_pid)
        return procs

    def state(self) -> DemoState | None:
        try:
            return DemoState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def is_demo_dir(self) -> bool:
        return self.marker.is_file()


def running_kafka(layout: Layout) -> tuple[KafkaInfo, DemoState]:
    state = layout.state()
    if not state or not layout.kafka.running():
        raise DemoError(f"no demo is running in {layout.root}: start one with `make demo`")
    return layout.kafka.info(), state
