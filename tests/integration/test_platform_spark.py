"""The local Spark cluster is real: a master and two workers on 127.0.0.1 that run a job reading Kafka over SASL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from wml_localplatform import KafkaInfo, PlatformConfig, SparkCluster, SparkInfo
from wml_localplatform.spark import master_state, spark_home

LOOPBACK = {"127.0.0.1", "[::ffff:127.0.0.1]"}

# The driver, in a process of its own so this one never holds a JVM. Its settings arrive on stdin (a password
# in argv would show in ps); it prints the values it read as one JSON line. The driver and executors JIT with C1
# only, as the platform's daemons do: for a job of seconds on 2 cores, C2 doubled it (17-27 s against 32-52 s).
JOB = """
import json, sys, time
from pyspark.sql import SparkSession

job = json.load(sys.stdin)
started = time.monotonic()
spark = (SparkSession.builder.appName("wso-platform-test").master(job["master"])
         .config("spark.jars", job["jars"]).config("spark.executor.memory", "1g")
         .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
         .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
         .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1")
         .config("spark.executor.extraJavaOptions", "-XX:TieredStopAtLevel=1").getOrCreate())
session = time.monotonic() - started
try:
    reader = spark.read.format("kafka")
    for key, value in job["options"].items():
        reader = reader.option(key, value)
    rows = reader.load().selectExpr("CAST(value AS STRING) AS value").collect()
    executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
    print(json.dumps({"values": [r.value for r in rows], "executors": executors, "session_seconds": session,
                      "read_seconds": time.monotonic() - started - session}))
finally:
    spark.stop()
"""


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """(local address, pid) of every TCP socket these processes listen on."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        for pid in pids:
            if f"pid={pid}," in line:
                found.append((fields[3], pid))
    return found


def _own(spark_cluster: SparkCluster | None) -> SparkCluster:
    if spark_cluster is None:  # WSO_SPARK_MASTER: someone else's processes
        pytest.fail("this test looks at the cluster's processes; it needs the run's own (unset WSO_SPARK_MASTER)")
    return spark_cluster


def test_cluster_has_two_alive_workers_on_loopback_only(spark_cluster: SparkCluster | None) -> None:
    cluster = _own(spark_cluster)
    # Read now, not the session's first SparkInfo: the reliability case restarts the master and a worker (new PIDs).
    spark = cluster.info()
    state = master_state(spark.master_ui)
    assert state["status"] == "ALIVE"
    assert state["aliveworkers"] == 2
    assert {w["port"] for w in state["workers"] if w["state"] == "ALIVE"} == set(spark.worker_ports)
    assert spark.master_url.startswith("spark://127.0.0.1:")
    assert cluster.running()

    listening = _listening({spark.master_pid, *spark.worker_pids})
    # The master's RPC and UI, each worker's RPC and UI; nothing else, and nothing beyond loopback.
    assert len(listening) == 2 + 2 * len(spark.worker_pids), listening
    assert all(address.rsplit(":", 1)[0] in LOOPBACK for address, _ in listening), listening


def test_a_job_reads_kafka_over_sasl(spark: SparkInfo, kafka: KafkaInfo, kafka_topic: Callable[..., str],
                                     platform_config: PlatformConfig, tmp_path: Path) -> None:
    topic = kafka_topic("spark", partitions=2)
    values = [f'{{"tweet": "spark {i} {uuid.uuid4().hex[:6]}"}}' for i in range(6)]
    producer = Producer(kafka.client_config())
    for i, value in enumerate(values):
        producer.produce(topic, value.encode(), partition=i % 2)
    assert producer.flush(30) == 0

    client = kafka.client_config()
    jaas = (f'org.apache.kafka.common.security.plain.PlainLoginModule required '
            f'username="{client["sasl.username"]}" password="{client["sasl.password"]}";')
    jars = sorted(platform_config.spark_kafka_libs().glob("*.jar"))
    job = {"master": spark.master_url, "jars": ",".join(str(j) for j in jars),
           "options": {"kafka.bootstrap.servers": kafka.bootstrap, "subscribe": topic,
                       "startingOffsets": "earliest", "endingOffsets": "latest",
                       "kafka.security.protocol": kafka.security_protocol,
                       "kafka.sasl.mechanism": kafka.sasl_mechanism, "kafka.sasl.jaas.config": jaas}}
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(spark_home()),
           "JAVA_HOME": str(platform_config.java().resolve().parents[1])}
    log = tmp_path / "spark-job.log"  # a .log: the session's secret scanner reads it too
    with log.open("w") as stderr:
        done = subprocess.run([sys.executable, "-c", JOB], input=json.dumps(job), stdout=subprocess.PIPE,
                              stderr=stderr, text=True, env=env, cwd=tmp_path, timeout=180, check=False)
    assert done.returncode == 0, log.read_text()[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(result["values"]) == sorted(values)
    assert result["executors"] >= 1
    print(f"driver session {result['session_seconds']:.1f} s, Kafka read {result['read_seconds']:.1f} s")


def test_restarts_keep_ports_and_destroy_leaves_no_process(platform_config: PlatformConfig, tmp_path: Path) -> None:
    """A cluster of its own (one worker): kill -9 and restart each part, then destroy it."""
    cluster = SparkCluster(platform_config, tmp_path / "spark", workers=1)
    try:
        info = cluster.start()
        cluster.restart_worker(0, kill=True)
        cluster.restart_master(kill=True)
        after = cluster.info()
        assert (after.master_url, after.master_ui, after.worker_ports) == (info.master_url, info.master_ui,
                                                                         info.worker_ports)
        assert after.master_pid != info.master_pid
        assert after.worker_pids != info.worker_pids
        state = master_state(after.master_ui)
        assert (state["status"], state["aliveworkers"]) == ("ALIVE", 1)
    finally:
        cluster.destroy()
    pids = {info.master_pid, *info.worker_pids, after.master_pid, *after.worker_pids}
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    assert not _listening(pids)
    assert not cluster.dir.exists()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True
