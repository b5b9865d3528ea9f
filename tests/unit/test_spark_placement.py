"""Where a deployment runs (spark/placement.py) and what the driver hands Spark (spark/driver.py helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wml_server.errors import APIError
from wml_server.settings import Settings
from wml_server.spark.driver import Driver, jaas, kafka_options
from wml_server.spark.placement import SPARK_MASTER_NOT_ALLOWED, parse_allowed, spark_master


def creds(url: str) -> dict[str, object]:
    return {"credentials": {"cluster_master_url": url, "tenant_secret": "s3cret-value"}, "version": "2.0"}


ALLOWED = ("spark://127.0.0.1:7077", "local[2]")


@pytest.mark.parametrize("url", ["https://spark.bluemix.net", "https://spark.local", "", "yarn", "k8s://x"])
def test_other_urls_run_on_the_built_in_engine(url: str) -> None:
    assert spark_master(creds(url), ALLOWED) is None
    assert spark_master(None, ALLOWED) is None


@pytest.mark.parametrize("url", ["spark://127.0.0.1:7077", "spark://127.0.0.1:7077/", " local[2] "])
def test_allowed_masters_run_on_spark(url: str) -> None:
    assert spark_master(creds(url), ALLOWED) == url.strip().rstrip("/")


@pytest.mark.parametrize("url", ["spark://10.0.0.9:7077", "spark://127.0.0.1:7078", "local[4]", "local", "local[*]"])
def test_any_other_spark_master_is_refused(url: str) -> None:
    with pytest.raises(APIError) as refused:
        spark_master(creds(url), ALLOWED)
    assert (refused.value.status, refused.value.code) == (400, SPARK_MASTER_NOT_ALLOWED)
    assert url in refused.value.message
    assert "s3cret" not in refused.value.message


def test_none_allowed_by_default() -> None:
    with pytest.raises(APIError) as refused:
        spark_master(creds("local[2]"), ())
    assert "WML_SERVER_SPARK_MASTERS" in refused.value.message


def test_the_allow_list_setting() -> None:
    assert parse_allowed("spark://a:7077, local[2]  spark://b:1") == ("spark://a:7077", "local[2]", "spark://b:1")
    assert parse_allowed("") == ()
    with pytest.raises(ValueError, match="not a Spark master URL"):
        parse_allowed("https://x")
    settings = Settings(spark_masters="spark://127.0.0.1:7077,local[1]")
    assert settings.spark_master_list == ("spark://127.0.0.1:7077", "local[1]")
    with pytest.raises(ValueError, match="not a Spark master URL"):
        Settings(spark_masters="http://evil:80")


def test_kafka_options_carry_sasl_for_the_java_client() -> None:
    options = kafka_options({"bootstrap.servers": "h:9092", "security.protocol": "SASL_PLAINTEXT",
                             "sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password": 'p"w\\d'})
    assert options["kafka.bootstrap.servers"] == "h:9092"
    assert options["kafka.security.protocol"] == "SASL_PLAINTEXT"
    assert options["kafka.isolation.level"] == "read_committed"
    assert options["kafka.sasl.jaas.config"] == jaas("u", 'p"w\\d')
    assert options["kafka.sasl.jaas.config"].endswith('password="p\\"w\\\\d";')


def test_a_query_failure_names_the_python_error_and_the_sink_code() -> None:
    driver = Driver({"state_dir": "/nonexistent", "sink": {"secrets": ["hunter2-secret"]}})
    text = ("An exception was raised by the Python Proxy. Return Message: Traceback (most recent call last):\n"
            "  File x\nModuleNotFoundError: No module named 'wml_server'\n at org.apache...")
    assert driver._failure(text) == ["spark_query_failed",
                                     "The Spark query failed: ModuleNotFoundError: No module named 'wml_server'"]
    sink = "...\nwml_server.spark.sink.SinkFailure: wml-sink-failure[kafka_producer_fenced]: partition 0 of `t`: x\n"
    assert driver._failure(sink) == ["kafka_producer_fenced", "partition 0 of `t`: x"]
    assert "hunter2" not in driver._failure("KafkaError: auth failed for password hunter2-secret")[1]


def test_the_dry_run_tries_a_standalone_master() -> None:
    import socket

    from wml_server.spark.placement import SPARK_MASTER_UNREACHABLE, reachable

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert reachable(f"spark://127.0.0.1:{port}")
    with pytest.raises(APIError) as refused:
        reachable(f"spark://127.0.0.1:{port}", timeout=2)
    assert (refused.value.status, refused.value.code) == (503, SPARK_MASTER_UNREACHABLE)
    assert reachable("local[2]")


def test_the_jars_setting_takes_folders_and_files(tmp_path: Path) -> None:
    (tmp_path / "b.jar").write_bytes(b"")
    (tmp_path / "a.jar").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    settings = Settings(spark_jars=f"{tmp_path}, /opt/extra.jar")
    assert settings.spark_jar_list == (str(tmp_path / "a.jar"), str(tmp_path / "b.jar"), "/opt/extra.jar")
    assert Settings().spark_jar_list == ()
