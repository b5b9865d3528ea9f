"""One deployment's Spark driver: `python -m wml_server.spark.driver`, started and watched by supervisor.py.

Reads its configuration (JSON, with the Kafka credentials: never a file, never an argument) from stdin, then runs
one Structured Streaming query, Kafka source -> model -> our exactly-once sink (sink.py), until SIGTERM asks it
to stop at a batch boundary. Its state lives in `state_dir`:
- `driver.lock`: held for the driver's life, so a deployment never runs in two drivers at once;
- `driver.pid`: written once the lock is held (a restarted service re-attaches to that process);
- `status.json`: the query's real state, rewritten atomically on each change and after each batch;
- `checkpoint/`: Spark's offset and commit logs; a driver started again resumes from it.

Without a checkpoint (a first start, or one lost), the query starts where the deployment's consumer group says,
else where the hand-over or `starting_offsets` says: the sink's group offsets are the truth either way.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import sys
import tarfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from wml_server.engine.state import FAILED, INITIALIZING, RUNNING, STOPPED
from wml_server.spark.sink import FAILURE_MARK, RESULT_SCHEMA
from wml_server.spark.status import StatusFile

ANOTHER_DRIVER = 3  # exit code: the lock is held, another driver runs this deployment
SPARK_FAILED = "spark_query_failed"
MODEL_NOT_LOADED = "spark_model_load_failed"
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
_SINK_FAILURE = re.compile(re.escape(FAILURE_MARK) + r"\[([a-z_]+)\]: ([^\n]+)")


def jaas(user: str | None, password: str | None) -> str:
    def quoted(text: str | None) -> str:
        return '"' + (text or "").replace("\\", "\\\\").replace('"', '\\"') + '"'

    return (f"org.apache.kafka.common.security.plain.PlainLoginModule required username={quoted(user)} "
            f"password={quoted(password)};")


def kafka_options(librdkafka: dict[str, Any]) -> dict[str, str]:
    """The Java client's options (Spark's `kafka.`-prefixed source options) for a librdkafka configuration."""
    options = {"kafka.bootstrap.servers": librdkafka["bootstrap.servers"],
               "kafka.security.protocol": librdkafka.get("security.protocol", "SASL_SSL"),
               "kafka.isolation.level": "read_committed"}
    if "sasl.username" in librdkafka or "sasl.password" in librdkafka:
        options["kafka.sasl.mechanism"] = librdkafka.get("sasl.mechanism", "PLAIN")
        options["kafka.sasl.jaas.config"] = jaas(librdkafka.get("sasl.username"), librdkafka.get("sasl.password"))
    return options


def starting_offsets(config: dict[str, Any]) -> str:
    """Spark's startingOffsets JSON for a query without a checkpoint: each partition's start as the built-in
    engine resolves it (the group's committed offset, else the hand-over, else earliest/latest)."""
    from confluent_kafka import Consumer

    from wml_server.engine.position import start_offsets
    from wml_server.engine.spec import StartOptions

    topic = config["input_topic"]
    consumer = Consumer({**config["sink"]["in_kafka"], "group.id": config["sink"]["group_id"],
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        metadata = consumer.list_topics(topic, 30)
        partitions = sorted(metadata.topics[topic].partitions)
        start = config.get("start") or {}
        options = StartOptions(starting_offsets=start.get("starting_offsets", "earliest"),
                               start_position=start.get("start_position"))
        starts, _fresh, _lag = start_offsets(consumer, topic, partitions, options, 30)
    finally:
        consumer.close()
    return json.dumps({topic: {str(p): o for p, o in starts.items()}})


class Driver:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.state_dir = Path(config["state_dir"])
        self.status = StatusFile(self.state_dir / "status.json")
        self.stop_asked = threading.Event()
        self.counts = {"records_in": 0, "records_out": 0, "records_errored": 0, "batches": 0}
        self.position: dict[str, int] = {}
        self.version: str | None = None  # Spark's, once the session runs; written into each status

    def run(self) -> int:
        self.status.write(INITIALIZING)
        try:
            spark = self._session()
        except Exception as exc:
            self.status.write(FAILED, errors=[[SPARK_FAILED, f"The Spark session could not start on "
                                               f"{self.config['master']}: {type(exc).__name__}"]])
            return 1
        try:
            return self._run_query(spark)
        finally:
            spark.stop()

    def _session(self) -> Any:
        from pyspark.sql import SparkSession

        config = self.config
        # The executors' Python is the driver's pythonExec, which PySpark takes from this variable (the
        # spark.pyspark.python setting alone did not reach local[N] executors).
        os.environ["PYSPARK_PYTHON"] = config["python"]
        builder = (SparkSession.builder.master(config["master"]).appName(f"wml-{config['deployment_id']}")
                   .config("spark.ui.enabled", "false")
                   .config("spark.pyspark.python", config["python"])
                   .config("spark.executor.memory", config["executor_memory"])
                   .config("spark.sql.shuffle.partitions", "4")
                   .config("spark.sql.execution.arrow.maxRecordsPerBatch", "5000")
                   .config("spark.task.maxFailures", "4"))
        if config.get("java_options"):
            builder = (builder.config("spark.driver.extraJavaOptions", config["java_options"])
                       .config("spark.executor.extraJavaOptions", config["java_options"]))
        if config.get("cores_max"):
            builder = builder.config("spark.cores.max", str(config["cores_max"]))
        if config.get("jars"):
            builder = builder.config("spark.jars", ",".join(config["jars"]))
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
        return spark

    def _run_query(self, spark: Any) -> int:
        config = self.config
        version = self.version = spark.version
        self.status.write(INITIALIZING, spark_version=version)
        checkpoint = self.state_dir / "checkpoint"
        reader = spark.readStream.format("kafka").option("subscribe", config["input_topic"])
        for key, value in kafka_options(config["sink"]["in_kafka"]).items():
            reader = reader.option(key, value)
        if not (checkpoint / "offsets").is_dir():
            reader = reader.option("startingOffsets", starting_offsets(config))
        if config.get("max_records_per_batch"):
            reader = reader.option("maxOffsetsPerTrigger", str(config["max_records_per_batch"]))
        source = reader.load().select("partition", "offset", "key", "value")
        try:
            handle = self._scorer(spark)
        except Exception as exc:
            self.status.write(FAILED, spark_version=version,
                              errors=[[MODEL_NOT_LOADED, f"The model could not be loaded on Spark: "
                                                         f"{type(exc).__name__}: {str(exc)[:300]}"]])
            return 1
        writer = source.writeStream.foreachBatch(lambda frame, batch_id: self._batch(handle(frame), batch_id)) \
            .option("checkpointLocation", str(checkpoint)).queryName(f"wml-{config['deployment_id']}")
        if config.get("trigger_seconds"):
            writer = writer.trigger(processingTime=f"{config['trigger_seconds']} seconds")
        query = writer.start()
        running = False
        while query.isActive:
            if self.stop_asked.is_set() and not query.status.get("isTriggerActive", False):
                query.stop()  # between batches: the one in flight has committed
                break
            if not running and query.lastProgress is not None:
                running = True
                self._report(RUNNING, version)
            time.sleep(0.2)
        error = query.exception()
        if error is not None and not self.stop_asked.is_set():
            self.status.write(FAILED, spark_version=version, errors=[self._failure(str(error))],
                              **self._figures())
            return 1
        self.status.write(STOPPED, spark_version=version, **self._figures())
        return 0

    def _scorer(self, spark: Any) -> Any:
        """A function from a Kafka micro-batch DataFrame to the sink's result DataFrame."""
        from wml_server.spark import udfs

        model, sink = self.config["model"], self.config["sink"]
        if model["kind"] == "builtin":
            udfs.builtin_model(model["id"])  # fails here, with its reason, rather than in every task
            return lambda frame: frame.mapInPandas(partial(udfs.score_and_write, model["id"], sink), RESULT_SCHEMA)
        if model["kind"] == "user":
            return lambda frame: frame.mapInPandas(partial(udfs.score_user_and_write, model, sink), RESULT_SCHEMA)
        return self._mllib(spark, model, sink)

    def _mllib(self, spark: Any, model: dict[str, Any], sink: dict[str, Any]) -> Any:
        from pyspark.ml import PipelineModel
        from pyspark.ml.feature import IndexToString
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql import functions as F

        from wml_server.spark import udfs

        target = self.state_dir / "model"
        if not (target / "metadata").is_dir():
            with tarfile.open(model["archive"]) as archive:
                archive.extractall(target, filter="data")
            inner = [p for p in target.iterdir() if (p / "metadata").is_dir()]
            if inner and not (target / "metadata").is_dir():
                target = inner[0]
        pipeline = PipelineModel.load(str(target))
        labels = [s.getOutputCol() for s in pipeline.stages if isinstance(s, IndexToString)]
        label_col = labels[-1] if labels else "prediction"
        fields = model["fields"]
        types = {"string": "string", "boolean": "boolean", "integer": "long", "double": "double"}
        prepared_schema = ("partition int, offset long, key binary, value binary, refused binary, "
                           + ", ".join(f"`{f['name']}` {types[f['type']]}" for f in fields))

        def handle(frame: Any) -> Any:
            prepared = frame.mapInPandas(partial(udfs.prepare_mllib, fields), prepared_schema)
            scored = pipeline.transform(prepared)
            probability = (F.array_max(vector_to_array(F.col("probability")))
                           if "probability" in scored.columns else F.lit(None).cast("double"))
            out = scored.select("partition", "offset", "key", "value", "refused",
                                F.col(label_col).alias("label"), probability.alias("probability"))
            return out.mapInPandas(partial(udfs.finish_mllib, sink, version=model.get("version")), RESULT_SCHEMA)
        return handle

    def _batch(self, results: Any, batch_id: int) -> None:
        for row in results.collect():
            self.counts["records_in"] += row["written"]
            self.counts["records_out"] += row["written"] - row["errored"]
            self.counts["records_errored"] += row["errored"]
            self.position[str(row["partition"])] = max(self.position.get(str(row["partition"]), 0),
                                                       row["next_offset"])
        self.counts["batches"] = batch_id + 1
        self._report(RUNNING, self.version)

    def _report(self, status: str, version: str | None) -> None:
        self.status.write(status, spark_version=version, **self._figures())

    def _figures(self) -> dict[str, Any]:
        return {**self.counts, "position": dict(self.position)}

    def _failure(self, text: str) -> list[str]:
        found = _SINK_FAILURE.search(text)
        if found:
            return [found.group(1), found.group(2)[:500]]
        from wml_server.engine.failures import redact

        # Spark wraps a Python worker's exception in pages of traceback: its last `SomeError: ...` line says it.
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        raised = [line for line in lines if _RAISED.match(line)]
        first = raised[-1] if raised else (lines[0] if lines else "")

        return [SPARK_FAILED, "The Spark query failed: " + redact(first, self.config["sink"]["secrets"])[:500]]


def take_lock(state_dir: Path) -> int | None:
    fd = os.open(state_dir / "driver.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def main() -> int:
    config = json.loads(sys.stdin.read())
    state_dir = Path(config["state_dir"])
    state_dir.mkdir(parents=True, exist_ok=True)
    if take_lock(state_dir) is None:
        print(f"another driver holds {state_dir / 'driver.lock'}", file=sys.stderr)
        return ANOTHER_DRIVER
    # "<pid> <module>": the format of the local platform's PID files, so its tools can stop a driver too.
    (state_dir / "driver.pid").write_text(f"{os.getpid()} wml_server.spark.driver\n")
    driver = Driver(config)
    signal.signal(signal.SIGTERM, lambda _sig, _frame: driver.stop_asked.set())
    signal.signal(signal.SIGINT, lambda _sig, _frame: driver.stop_asked.set())
    return driver.run()


if __name__ == "__main__":
    sys.exit(main())
