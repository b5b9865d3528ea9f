"""The service's side of Spark streams: one driver process per deployment (driver.py), started, watched,
stopped and restarted here; their status reported as the built-in engine reports its own.

Drivers run in sessions of their own, so they outlive a restart of the service: a new service re-attaches to a
running driver (its `driver.pid`, checked against the process's command line) instead of starting a second one,
and a driver's lock file refuses a second driver anyway. A driver that dies (kill -9, an out-of-memory kill) is
started again from its checkpoint; three deaths in a row without a committed batch fail the deployment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wml_server.engine.failures import StreamFailure
from wml_server.engine.probe import check_stream
from wml_server.engine.spec import StreamSpec
from wml_server.engine.state import FAILED, INITIALIZING, RUNNING, STOPPED, Errors, StatusCallback, StreamState
from wml_server.spark.sink import transactional_id
from wml_server.spark.status import StatusFile

log = logging.getLogger(__name__)

DRIVER_MODULE = "wml_server.spark.driver"
SPARK_DRIVER_FAILED = "spark_driver_failed"
MAX_DEATHS = 3
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 60.0  # then SIGKILL: the sink makes even a kill mid-batch safe


@dataclass(frozen=True)
class SparkOptions:
    jars: tuple[str, ...] = ()
    executor_memory: str = "1g"
    cores_max: int = 0  # 0: Spark's default (all the cluster's free cores)
    trigger_seconds: float = 0.0  # 0: the next micro-batch as soon as the last one committed
    max_records_per_batch: int = 20_000
    java_options: str = ""
    python: str = field(default_factory=lambda: sys.executable)


def driver_config(spec: StreamSpec, master: str, state_dir: Path, options: SparkOptions,
                  model: dict[str, Any]) -> dict[str, Any]:
    """What a driver reads from its stdin (credentials included: never written to a file)."""
    sink = {"deployment_id": spec.deployment_id, "input_topic": spec.input.topic, "output_topic": spec.output.topic,
            "dead_letter_topic": spec.dead_letter_topic, "group_id": spec.group_id,
            "in_kafka": spec.input.connection.to_librdkafka(), "out_kafka": spec.output.connection.to_librdkafka(),
            "secrets": spec.secrets()}
    start = {"starting_offsets": spec.start.starting_offsets,
             "start_position": dict(spec.start.start_position) if spec.start.start_position else None}
    return {"deployment_id": spec.deployment_id, "master": master, "state_dir": str(state_dir),
            "python": options.python, "executor_memory": options.executor_memory, "cores_max": options.cores_max,
            "jars": list(options.jars), "trigger_seconds": options.trigger_seconds,
            "max_records_per_batch": options.max_records_per_batch, "input_topic": spec.input.topic,
            "java_options": options.java_options,
            "model": model, "sink": sink, "start": start}


def _is_driver(pid: int, deployment_id: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return not zombie and DRIVER_MODULE.encode() in cmdline and deployment_id.encode() in b" ".join(cmdline)


def driver_pid(state_dir: Path, deployment_id: str) -> int | None:
    """The PID of the deployment's running driver, from its PID file, checked against the process; else None."""
    try:
        pid = int((state_dir / "driver.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _is_driver(pid, deployment_id) else None


class _Watch:
    """One deployment on Spark: its driver process and the thread that reports its status."""

    def __init__(self, engine: SparkEngine, spec: StreamSpec, master: str, model: dict[str, Any]) -> None:
        self.engine, self.spec, self.master, self.model = engine, spec, master, model
        self.state_dir = engine.state_root / spec.deployment_id
        self.status_file = StatusFile(self.state_dir / "status.json")
        self.stop_asked = threading.Event()
        self.detached = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.last: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, name=f"wml-spark-{spec.deployment_id[:8]}", daemon=True)

    # -- the driver process ---------------------------------------------------------------------------------

    def pid(self) -> int | None:
        return driver_pid(self.state_dir, self.spec.deployment_id)

    def _spawn(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "status.json").unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WML_SERVER_")}
        # The driver listens for its executors: on loopback unless the administrator says where (a cluster on
        # other hosts needs an address its workers reach).
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        with open(self.state_dir / "driver.log", "ab") as out:
            self.proc = subprocess.Popen(
                [self.engine.options.python, "-m", DRIVER_MODULE, self.spec.deployment_id], stdin=subprocess.PIPE,
                stdout=out, stderr=subprocess.STDOUT, cwd=self.state_dir, env=env, start_new_session=True)
        assert self.proc.stdin is not None
        config = driver_config(self.spec, self.master, self.state_dir, self.engine.options, self.model)
        self.proc.stdin.write(json.dumps(config).encode())
        self.proc.stdin.close()

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is None:
            return True
        return self.pid() is not None

    def signal(self, sig: signal.Signals) -> None:
        pid = self.proc.pid if self.proc is not None and self.proc.poll() is None else self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    # -- the watch --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._watch()
        except Exception as exc:  # the watch must report, never vanish
            log.exception("deployment %s: its Spark watch failed", self.spec.deployment_id)
            self.engine.report(self, FAILED, [(SPARK_DRIVER_FAILED, f"Watching the Spark driver failed: "
                                                                   f"{type(exc).__name__}")])

    def _watch(self) -> None:
        deaths, batches_at_death = 0, -1
        if self.pid() is None:  # not a re-attach: check what a user can fix before Spark starts
            try:
                check_stream(self.spec, timeout=10.0)
            except StreamFailure as failure:
                self.engine.report(self, FAILED, [(failure.code, failure.message)])
                return
            if self.stop_asked.is_set():
                self.engine.report(self, STOPPED, [])
                return
            self._spawn()
        while not self.detached.is_set():
            self._read()
            if self._alive():
                if self.stop_asked.wait(POLL_SECONDS):
                    self._stop_driver()
                continue
            final = self.status_file.read() or {}
            if self.stop_asked.is_set() or final.get("status") == STOPPED:
                self.engine.report(self, STOPPED, [])
                return
            if final.get("status") == FAILED:
                self.engine.report(self, FAILED, [tuple(e) for e in final.get("errors", [])])
                return
            batches = int(final.get("batches", 0))
            deaths = deaths + 1 if batches == batches_at_death else 1
            batches_at_death = batches
            if deaths >= MAX_DEATHS:
                self.engine.report(self, FAILED, [(SPARK_DRIVER_FAILED, f"The Spark driver died {deaths} times in a "
                                                                        "row without committing a batch; see its log "
                                                                        f"in {self.state_dir / 'driver.log'}.")])
                return
            log.warning("deployment %s: its Spark driver ended unexpectedly; starting it again from its "
                        "checkpoint", self.spec.deployment_id)
            self._spawn()

    def _stop_driver(self) -> None:
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.2)
            self._read()
        if self._alive():
            log.warning("deployment %s: its Spark driver did not stop within %g s; killed",
                        self.spec.deployment_id, STOP_GRACE_SECONDS)
            self.signal(signal.SIGKILL)
            while self._alive():
                time.sleep(0.1)
        self._read()

    def _read(self) -> None:
        data = self.status_file.read()
        if data is None or data == self.last:
            return
        self.last = data
        status = data.get("status")
        if status in (INITIALIZING, RUNNING):
            self.engine.report(self, status, [])

    def state(self, status: str, errors: Errors) -> StreamState:
        data = self.last
        position = data.get("position") or None
        return StreamState(status, errors, int(data.get("records_in", 0)), int(data.get("records_out", 0)),
                           int(data.get("records_errored", 0)),
                           (self.spec.input.topic, dict(position)) if position else None, None)


class SparkEngine:
    """Deployments on Spark, as the built-in Engine runs its own: start, stop, remove, status."""

    def __init__(self, state_root: Path, on_status_change: StatusCallback, options: SparkOptions) -> None:
        self.state_root = state_root
        self.options = options
        self._callback = on_status_change
        self._watches: dict[str, _Watch] = {}
        self._status: dict[str, tuple[str, Errors]] = {}
        self._lock = threading.Lock()

    def runs(self, deployment_id: str) -> bool:
        with self._lock:
            return deployment_id in self._watches

    def start(self, spec: StreamSpec, master: str, model: dict[str, Any]) -> None:
        with self._lock:
            current = self._watches.get(spec.deployment_id)
            if current is not None and current.thread.is_alive() and not current.stop_asked.is_set():
                return
            watch = _Watch(self, spec, master, model)
            self._watches[spec.deployment_id] = watch
            self._status[spec.deployment_id] = (INITIALIZING, [])
        if current is not None:
            current.thread.join()  # a stop in progress: never two drivers
        self._announce(spec.deployment_id, INITIALIZING, [])
        watch.thread.start()

    def stop(self, deployment_id: str, timeout: float = 10.0) -> bool:
        with self._lock:
            watch = self._watches.get(deployment_id)
        if watch is None:
            return self._stop_orphan(deployment_id)
        watch.stop_asked.set()
        watch.thread.join(timeout)
        return not watch.thread.is_alive()

    def _stop_orphan(self, deployment_id: str) -> bool:
        """A driver no watch knows: a stop the last service did not finish (the user wanted it STOPPED). Stopped
        here, between batches, so the position read next is its last."""
        pid = driver_pid(self.state_root / deployment_id, deployment_id)
        if pid is None:
            return True
        log.info("deployment %s: stopping the Spark driver a previous service left running", deployment_id)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while _is_driver(pid, deployment_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _is_driver(pid, deployment_id):
            os.kill(pid, signal.SIGKILL)
        return True

    def remove(self, spec: StreamSpec, timeout: float = STOP_GRACE_SECONDS + 10) -> None:
        """Stops the deployment's driver, then removes its state and aborts its partitions' transactions."""
        with self._lock:
            watch = self._watches.pop(spec.deployment_id, None)
            self._status.pop(spec.deployment_id, None)
        if watch is not None:
            watch.stop_asked.set()
            watch.thread.join(timeout)
        else:
            self._stop_orphan(spec.deployment_id)  # between batches too: no task of it left to commit
        fence_partitions(spec)
        shutil.rmtree(self.state_root / spec.deployment_id, ignore_errors=True)

    def status(self, deployment_id: str) -> StreamState | None:
        with self._lock:
            watch = self._watches.get(deployment_id)
            current = self._status.get(deployment_id)
        if watch is None or current is None:
            return None
        return watch.state(*current)

    def report(self, watch: _Watch, status: str, errors: Errors) -> None:
        deployment_id = watch.spec.deployment_id
        with self._lock:
            if self._watches.get(deployment_id) is not watch or self._status.get(deployment_id) == (status, errors):
                return
            self._status[deployment_id] = (status, list(errors))
        self._announce(deployment_id, status, errors)

    def _announce(self, deployment_id: str, status: str, errors: Errors) -> None:
        try:
            self._callback(deployment_id, status, list(errors))
        except Exception:
            log.exception("on_status_change failed for Spark deployment %s (%s)", deployment_id, status)

    def shutdown(self) -> None:
        """The service is going: drivers keep running (the next service re-attaches); only the watches end."""
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
        for watch in watches:
            watch.detached.set()
        for watch in watches:
            watch.thread.join(5)


def fence_partitions(spec: StreamSpec, timeout: float = 10.0) -> None:
    """Aborts whatever transaction a killed driver's tasks left open (one transactional id per partition)."""
    from confluent_kafka import Consumer, KafkaException, Producer

    from wml_server.engine.failures import redact

    config = spec.input.connection.to_librdkafka()
    try:
        consumer = Consumer({**config, "group.id": spec.group_id})
        try:
            partitions = sorted(consumer.list_topics(spec.input.topic, timeout).topics[spec.input.topic].partitions)
        finally:
            consumer.close()
        for partition in partitions:
            producer = Producer({**spec.output.connection.to_librdkafka(),
                                 "transactional.id": transactional_id(spec.deployment_id, partition)})
            producer.init_transactions(timeout)
            producer.flush(0)
    except (KafkaException, KeyError) as exc:
        log.warning("deployment %s: its Spark partitions' transactions could not be fenced: %s",
                    spec.deployment_id, redact(str(exc), spec.secrets()))
