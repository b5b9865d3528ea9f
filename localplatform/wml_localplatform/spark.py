"""A real Spark standalone cluster on 127.0.0.1: one master and N workers, from the pyspark package's own Spark.

Spark is run as processes (bin/spark-class); pyspark is never imported here, so the demo can import this module
without a JVM's worth of Python. The master keeps its recovery state in a folder (FILESYSTEM recovery mode) and
every process keeps its ports across a restart: after restart_master() or restart_worker() the workers, drivers
and executors that were there register again.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wml_localplatform import process
from wml_localplatform.config import MissingPrerequisite, PlatformConfig

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


@dataclass(frozen=True)
class SparkInfo:
    master_url: str
    master_ui: str
    master_pid: int
    worker_pids: list[int]
    worker_ports: list[int]
    worker_uis: list[str]
    version: str
    ready_seconds: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> SparkInfo:
        return cls(**json.loads(text))

    @classmethod
    def from_env(cls) -> SparkInfo | None:
        """The master the environment names (WSO_SPARK_MASTER, spark://host:port), or None: then the caller
        starts a cluster of its own. Its UI, processes and version are unknown here."""
        master = os.environ.get("WSO_SPARK_MASTER")
        if not master:
            return None
        return cls(master_url=master, master_ui="", master_pid=0, worker_pids=[], worker_ports=[], worker_uis=[],
                   version="external", ready_seconds=0.0)

    @property
    def master_port(self) -> int:
        return int(self.master_url.rsplit(":", 1)[1])


def spark_home() -> Path:
    """The installed pyspark package's folder: a Spark distribution (bin/, jars/), found without importing it."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise MissingPrerequisite("pyspark is not installed: run `make venv` (pyproject's `spark` extra)")
    return Path(spec.origin).parent


def master_state(ui: str, timeout: float = 2.0) -> dict[str, Any]:
    """The master's /json/ page: status, aliveworkers, workers, activeapps..."""
    with urllib.request.urlopen(f"{ui}/json/", timeout=timeout) as response:  # noqa: S310 - our own http URL
        state: dict[str, Any] = json.load(response)
    return state


class SparkCluster:
    def __init__(self, config: PlatformConfig, directory: Path, workers: int = 2) -> None:
        self.config = config
        self.dir = directory
        self.workers = workers
        self.info_path = directory / "info.json"
        self.master_pid_file = directory / "master.pid"
        self.master_log = directory / "logs" / "master.log"

    def worker_pid_file(self, k: int) -> Path:
        return self.dir / f"worker-{k}.pid"

    def worker_log(self, k: int) -> Path:
        return self.dir / "logs" / f"worker-{k}.log"

    def running(self) -> bool:
        return process.is_running(self.master_pid_file) and all(
            process.is_running(self.worker_pid_file(k)) for k in range(self.workers))

    def info(self) -> SparkInfo:
        return SparkInfo.from_json(self.info_path.read_text())

    def _env(self) -> dict[str, str]:
        java_home = self.config.java().resolve().parents[1]
        local = "127.0.0.1"
        # The master's and workers' web UIs bind SPARK_LOCAL_IP (else 0.0.0.0); SPARK_PUBLIC_DNS is what their
        # links name. The REST submission server is off (it is by default; said here so it stays so). C1 only and
        # a small heap: the daemons do little, and on 2 cores C2 would compete with the executors for minutes.
        opts = f"-Dspark.master.rest.enabled=false -Dspark.deploy.recoveryMode=FILESYSTEM " \
               f"-Dspark.deploy.recoveryDirectory={self.dir / 'recovery'}"
        return {"SPARK_HOME": str(spark_home()), "JAVA_HOME": str(java_home), "SPARK_LOCAL_IP": local,
                "SPARK_PUBLIC_DNS": local, "SPARK_LOCAL_DIRS": str(self.dir / "local"),
                "SPARK_LOG_DIR": str(self.dir / "logs"), "SPARK_WORKER_DIR": str(self.dir / "work"),
                "SPARK_CONF_DIR": str(self.dir / "conf"), "SPARK_NO_DAEMONIZE": "1", "SPARK_DAEMON_MEMORY": "512m",
                "SPARK_DAEMON_JAVA_OPTS": "-XX:TieredStopAtLevel=1", "SPARK_MASTER_OPTS": opts}

    def _spark_class(self) -> Path:
        path = spark_home() / "bin" / "spark-class"
        if not path.is_file():
            raise MissingPrerequisite(f"{path} is missing: reinstall pyspark (`make venv`)")
        return path

    def _start_master(self, port: int, ui_port: int) -> subprocess.Popen[bytes]:
        argv: list[str | os.PathLike[str]] = [
            "bash", self._spark_class(), MASTER_CLASS, "--host", "127.0.0.1", "--port", str(port),
            "--webui-port", str(ui_port)]
        return process.start(MASTER_CLASS, argv, self.master_log, self.master_pid_file, env=self._env(), cwd=self.dir)

    def _start_worker(self, k: int, port: int, ui_port: int, master_url: str) -> subprocess.Popen[bytes]:
        work = self.dir / f"worker-{k}"
        work.mkdir(parents=True, exist_ok=True)
        argv: list[str | os.PathLike[str]] = [
            "bash", self._spark_class(), WORKER_CLASS, "--host", "127.0.0.1", "--port", str(port),
            "--cores", "1", "--memory", "2g", "--webui-port", str(ui_port), "--work-dir", work, master_url]
        return process.start(WORKER_CLASS, argv, self.worker_log(k), self.worker_pid_file(k),
                             env={**self._env(), "SPARK_WORKER_DIR": str(work)}, cwd=self.dir)

    def start(self, timeout: float = 120.0) -> SparkInfo:
        if self.running() and self.info_path.is_file():
            return self.info()
        self.stop()
        self.config.java()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        shutil.rmtree(self.dir / "recovery", ignore_errors=True)  # a fresh cluster: no stale workers to wait for
        for sub in ("conf", "local", "logs", "recovery"):
            (self.dir / sub).mkdir(exist_ok=True)
        port, ui_port = process.free_port(), process.free_port()
        worker_ports = [process.free_port() for _ in range(self.workers)]
        worker_ui_ports = [process.free_port() for _ in range(self.workers)]
        info = SparkInfo(master_url=f"spark://127.0.0.1:{port}", master_ui=f"http://127.0.0.1:{ui_port}",
                         master_pid=0, worker_pids=[], worker_ports=worker_ports,
                         worker_uis=[f"http://127.0.0.1:{p}" for p in worker_ui_ports],
                         version=importlib.metadata.version("pyspark"), ready_seconds=0.0)
        started = time.monotonic()
        master = self._start_master(port, ui_port)
        process.wait_ready("Spark master", lambda: _alive(info), master, self.master_log, timeout)
        procs = [self._start_worker(k, worker_ports[k], worker_ui_ports[k], info.master_url)
                 for k in range(self.workers)]
        for k, proc in enumerate(procs):
            process.wait_ready(f"Spark worker {k}", functools.partial(_worker_alive, info, k),
                               proc, self.worker_log(k), timeout)
        info = SparkInfo(**{**asdict(info), "master_pid": master.pid, "worker_pids": [p.pid for p in procs],
                            "ready_seconds": round(time.monotonic() - started, 2)})
        self.info_path.write_text(info.to_json())
        return info

    def kill_master(self) -> bool:
        """kill -9 the master, as in a crash; the workers and applications keep running without it."""
        return process.kill_pid_file(self.master_pid_file)

    def kill_worker(self, k: int) -> bool:
        """kill -9 worker k; its executors notice their worker is gone and exit."""
        return process.kill_pid_file(self.worker_pid_file(k))

    def restart_master(self, down_seconds: float = 0.0, kill: bool = False, timeout: float = 120.0) -> float:
        """Stops the master (clean, or kill -9 when kill), leaves it down for down_seconds, starts it on the same
        ports with its recovery state; returns seconds from relaunch until it is ALIVE with every worker back."""
        info = self.info()
        if kill:
            self.kill_master()
        else:
            process.stop_pid_file(self.master_pid_file)
        time.sleep(down_seconds)
        started = time.monotonic()
        master = self._start_master(info.master_port, int(info.master_ui.rsplit(":", 1)[1]))
        process.wait_ready("Spark master", lambda: _alive(info), master, self.master_log, timeout)
        self.info_path.write_text(SparkInfo(**{**asdict(info), "master_pid": master.pid}).to_json())
        deadline = time.monotonic() + 15  # once ALIVE (recovery over), the workers it knows are counted quickly
        while not _alive(info, self.workers) and time.monotonic() < deadline:
            time.sleep(0.5)
        # A worker restarted just before the master went down is in the recovery state under its old id: the
        # recovered master drops that id after its worker timeout (60 s) and never counts the worker's new one,
        # which does not register again. Such a worker is restarted, as an operator of the cluster would.
        for k in range(self.workers):
            if not _worker_alive(info, k):
                self.restart_worker(k, timeout=timeout)
        return time.monotonic() - started

    def restart_worker(self, k: int, down_seconds: float = 0.0, kill: bool = False, timeout: float = 120.0) -> float:
        """The same for worker k: back on its ports and work dir; returns seconds until the master counts it."""
        info = self.info()
        if kill:
            self.kill_worker(k)
        else:
            process.stop_pid_file(self.worker_pid_file(k))
        time.sleep(down_seconds)
        worker = self._start_worker(k, info.worker_ports[k], int(info.worker_uis[k].rsplit(":", 1)[1]),
                                    info.master_url)
        seconds = process.wait_ready(f"Spark worker {k}", lambda: _worker_alive(info, k), worker, self.worker_log(k),
                                     timeout)
        pids = [worker.pid if j == k else pid for j, pid in enumerate(info.worker_pids)]
        self.info_path.write_text(SparkInfo(**{**asdict(info), "worker_pids": pids}).to_json())
        return seconds

    def stop(self) -> None:
        # Workers first: each stops its executors; the master would otherwise see them as lost and log it.
        for k in range(self.workers):
            process.stop_pid_file(self.worker_pid_file(k), timeout=20.0)
        process.stop_pid_file(self.master_pid_file, timeout=20.0)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(info: SparkInfo, workers: int = 0) -> bool:
    if not process.port_open(int(info.master_ui.rsplit(":", 1)[1])):
        return False
    state = master_state(info.master_ui)
    return state.get("status") == "ALIVE" and int(state.get("aliveworkers", 0)) >= workers


def _worker_alive(info: SparkInfo, k: int) -> bool:
    workers = master_state(info.master_ui).get("workers", [])
    return any(w.get("port") == info.worker_ports[k] and w.get("state") == "ALIVE" for w in workers)
