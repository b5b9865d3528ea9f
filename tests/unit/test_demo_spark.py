"""`make demo SPARK=1`'s plumbing, without starting anything: the flag, the service's environment, the Spark
Secrets of both resources (judged by the service's own placement rule), the longer waits and what `status` lists.

The run itself (about two minutes more than the default demo on 2 cores) is not in the e2e suite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wml_localplatform.config import MissingPrerequisite, PlatformConfig
from wml_localplatform.demo import cli, scenario
from wml_localplatform.demo.own_model import MODEL_RESOURCE, builtin_engine_secret, declared
from wml_localplatform.demo.prereqs import check_prerequisites
from wml_localplatform.demo.samples import sample_resource, sample_secrets
from wml_localplatform.demo.start import NOT_SPARK, Running, service_env, spark_credentials
from wml_localplatform.demo.state import DemoState, Layout
from wml_localplatform.wmlservice import WMLUser
from wml_server.spark.placement import parse_allowed, spark_master

MASTER = "spark://127.0.0.1:7077"


@pytest.fixture
def config(tmp_path: Path) -> PlatformConfig:
    """A cache holding the Spark Kafka connector jars (and nothing else)."""
    jars = tmp_path / "cache" / "spark-kafka-4.2.0"
    (jars / "libs").mkdir(parents=True)
    (jars / ".complete").touch()
    return PlatformConfig("v1.36.2", "4.1.1", tmp_path / "cache", "4.2.0")


def _state(spark_master_url: str = "") -> DemoState:
    return DemoState(started="now", kubeconfig="k", kubectl="kubectl", wml_url="http://127.0.0.1:9443",
                     instance_id="i-1", namespace="marketing", name="tweet-sentiment", input_topic="tweets",
                     output_topic="tweet-sentiment", spark_master=spark_master_url)


def _running(spark_master_url: str = "") -> Running:
    return Running(kubectl=None, kafka=None, state=_state(spark_master_url),  # type: ignore[arg-type]
                   user=WMLUser("marketing", "pw", "i-1"))


def _placement(credentials_json: str, env: dict[str, str]) -> str | None:
    """Where the service runs a stream with this Spark Secret: its master, or None for the built-in engine."""
    allowed = parse_allowed(env.get("WML_SERVER_SPARK_MASTERS", ""))
    return spark_master({"credentials": json.loads(credentials_json)}, allowed)


@pytest.mark.parametrize(("argv", "env", "spark"), [
    (["up"], {}, False), (["up", "--spark"], {}, True), (["up"], {"WSO_DEMO_SPARK": "1"}, True),
    (["up"], {"WSO_DEMO_SPARK": "0"}, False)])
def test_the_spark_flag_and_its_environment_variable(argv: list[str], env: dict[str, str], spark: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSO_DEMO_SPARK", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.parse_args(argv).spark is spark


def model_file(folder: Path) -> Path:
    path = folder / "tweets-sklearn.skops"
    path.write_bytes(b"PK not really a model")
    return path


def test_the_service_allows_the_clusters_master_only_with_spark(config: PlatformConfig) -> None:
    assert service_env(config, "") == {}
    env = service_env(config, MASTER)
    assert env == {"WML_SERVER_SPARK_MASTERS": MASTER,
                   "WML_SERVER_SPARK_JARS": str(config.cache / "spark-kafka-4.2.0" / "libs"),
                   "WML_SERVER_SPARK_EXECUTOR_MEMORY": "768m"}


def test_the_samples_stream_goes_to_spark_and_the_scikit_learn_one_stays_on_the_builtin_engine(
        config: PlatformConfig, tmp_path: Path) -> None:
    env = service_env(config, MASTER)
    resource = sample_resource("marketing", "http://127.0.0.1:9443")
    ref = resource["spec"]["sparkCredentialsSecretRef"]
    docs = sample_secrets(resource, "marketing", wml={"username": "u", "password": "p", "instance_id": "i"},
                          kafka={"kafka_brokers_sasl": "[]", "user": "u", "password": "p",
                                 "security_protocol": "SASL_PLAINTEXT"},
                          spark_json=json.dumps(spark_credentials(MASTER)))
    by_name: dict[str, Any] = {d["metadata"]["name"]: d["stringData"] for d in docs}
    assert _placement(by_name[ref["name"]][ref["key"]], env) == MASTER

    run = _running(MASTER)
    assert run.spark
    model, second = declared(run, "http://127.0.0.1:8000", model_file(tmp_path))
    assert second["spec"]["modelRef"] == {"name": MODEL_RESOURCE}
    assert model["spec"]["wml"] == second["spec"]["wml"]
    secret = builtin_engine_secret(run, second)
    assert secret is not None
    second_ref = second["spec"]["sparkCredentialsSecretRef"]
    assert second_ref["name"] != ref["name"], "the scikit-learn model must not share the Spark master's Secret"
    assert secret["metadata"] == {"name": second_ref["name"], "namespace": "marketing"}
    assert json.loads(secret["stringData"][second_ref["key"]])["cluster_master_url"] == NOT_SPARK
    assert _placement(secret["stringData"][second_ref["key"]], env) is None


def test_without_spark_both_resources_share_the_samples_secret_on_the_builtin_engine(tmp_path: Path) -> None:
    run = _running()
    assert not run.spark
    _, second = declared(run, "http://127.0.0.1:8000", model_file(tmp_path))
    sample = sample_resource("marketing", "http://127.0.0.1:9443")
    assert second["spec"]["sparkCredentialsSecretRef"] == sample["spec"]["sparkCredentialsSecretRef"]
    assert builtin_engine_secret(run, second) is None
    assert _placement(json.dumps(spark_credentials(NOT_SPARK)), {}) is None


def test_the_waits_are_longer_only_on_spark() -> None:
    assert scenario.timeouts(False) == (120.0, 90.0)
    change, records = scenario.timeouts(True)
    assert change > 120.0
    assert records > 90.0


def test_status_lists_spark_only_for_a_demo_that_started_it(tmp_path: Path, config: PlatformConfig) -> None:
    layout = Layout(tmp_path / "demo", config)
    assert not any(name.startswith("Spark") for name in layout.processes())
    layout.spark.dir.mkdir(parents=True)
    assert layout.processes()["Spark (master, 2 workers)"] is False


def test_old_demo_json_without_spark_master_still_loads(tmp_path: Path, config: PlatformConfig) -> None:
    layout = Layout(tmp_path, config)
    saved = {k: v for k, v in _state().__dict__.items() if k != "spark_master"}
    layout.state_file.write_text(json.dumps(saved))
    state = layout.state()
    assert state is not None
    assert state.spark_master == ""


def test_spark_prerequisites_are_checked_only_with_spark(tmp_path: Path) -> None:
    bare = PlatformConfig("v1.36.2", "4.1.1", tmp_path / "empty-cache", "4.2.0")
    with pytest.raises(MissingPrerequisite):
        bare.spark_kafka_libs()
    assert not any("spark-kafka" in p for p in check_prerequisites(bare))
    assert any("spark-kafka-4.2.0 is missing" in p for p in check_prerequisites(bare, spark=True))
