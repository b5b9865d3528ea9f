"""Where the platform's binaries, jars and run-time files live, and which versions it runs."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: localplatform/wml_localplatform/config.py
HACK_DIR = ROOT / "hack"


def read_versions(path: Path = HACK_DIR / "versions.env") -> dict[str, str]:
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip()
    return versions


def cache_dir() -> Path:
    """The same folder hack/lib.sh fills: $WSO_CACHE, else $XDG_CACHE_HOME or ~/.cache."""
    if env := os.environ.get("WSO_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wml-stream-operator"


class MissingPrerequisite(RuntimeError):
    """Something the platform needs is not installed; the message says what to run."""


@dataclass(frozen=True)
class PlatformConfig:
    k8s_version: str
    kafka_version: str
    cache: Path
    spark_version: str

    @classmethod
    def load(cls) -> PlatformConfig:
        versions = read_versions()
        return cls(versions["K8S_VERSION"], versions["KAFKA_VERSION"], cache_dir(), versions["SPARK_VERSION"])

    def k8s_binary(self, name: str) -> Path:
        path = self.cache / "bin" / f"{name}-{self.k8s_version}"
        if not path.is_file():
            raise MissingPrerequisite(f"{path} is missing: run `make platform-build` (hack/build-k8s.sh)")
        return path

    def kubectl(self) -> Path:
        """Our kubectl when built, else the one on PATH (for a user's own cluster)."""
        ours = self.cache / "bin" / f"kubectl-{self.k8s_version}"
        if ours.is_file():
            return ours
        found = shutil.which("kubectl")
        if not found:
            raise MissingPrerequisite("no kubectl: run `make platform-build` or install kubectl")
        return Path(found)

    def etcd(self) -> Path:
        found = shutil.which("etcd")
        if not found:
            raise MissingPrerequisite("etcd is not on PATH: run `make platform-build` (hack/install-etcd.sh)")
        return Path(found)

    def kafka_libs(self) -> Path:
        path = self.cache / f"kafka-{self.kafka_version}"
        if not (path / ".complete").is_file():
            raise MissingPrerequisite(f"{path} is missing: run `make platform-build` (hack/fetch-kafka.sh)")
        return path / "libs"

    def spark_kafka_libs(self) -> Path:
        """Spark's Kafka connector and what it adds to pyspark's own jars (hack/fetch-spark-jars.sh)."""
        path = self.cache / f"spark-kafka-{self.spark_version}"
        if not (path / ".complete").is_file():
            raise MissingPrerequisite(f"{path} is missing: run `make platform-build` (hack/fetch-spark-jars.sh)")
        return path / "libs"

    @property
    def pause_image(self) -> str:
        """The local node's pod sandbox image (hack/setup-node.sh builds it)."""
        return read_versions()["PAUSE_IMAGE"]

    def java(self) -> Path:
        home = os.environ.get("JAVA_HOME")
        found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
        if not found or not Path(found).is_file():
            raise MissingPrerequisite("java is not installed: install a Java 17+ runtime")
        return Path(found)
