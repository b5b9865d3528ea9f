"""The service's settings: variables, flags generated from the same fields, and clear refusals."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wml_server.__main__ import main
from wml_server.settings import Settings, add_arguments, env_var, flag, from_namespace, is_loopback, usable_cores

pytestmark = pytest.mark.unit
ANY = "0.0.0.0"  # noqa: S104 (every interface: the address the rule is about)

# The names the README, the manifests and the tests use; none may change.
VARIABLES = {
    "host": "WML_SERVER_HOST", "port": "WML_SERVER_PORT", "data_dir": "WML_SERVER_DATA_DIR",
    "token_ttl_seconds": "WML_SERVER_TOKEN_TTL", "signing_key_file": "WML_SERVER_SIGNING_KEY_FILE",
    "key_file": "WML_SERVER_KEY_FILE",
    "deployment_limit": "WML_SERVER_DEPLOYMENT_LIMIT", "plan": "WML_SERVER_PLAN",
    "tls_cert": "WML_SERVER_TLS_CERT", "tls_key": "WML_SERVER_TLS_KEY", "plain_http": "WML_SERVER_PLAIN_HTTP",
    "tls_reload_seconds": "WML_SERVER_TLS_RELOAD_SECONDS",
    "run_streams": "WML_SERVER_RUN_STREAMS",
    "kafka_unreachable_timeout": "WML_SERVER_KAFKA_UNREACHABLE_TIMEOUT", "public_url": "WML_SERVER_PUBLIC_URL",
    "log_level": "WML_SERVER_LOG_LEVEL", "rate_limit": "WML_SERVER_RATE_LIMIT",
    "audit_log": "WML_SERVER_AUDIT_LOG",
    "token_rate_limit": "WML_SERVER_TOKEN_RATE_LIMIT", "trusted_proxies": "WML_SERVER_TRUSTED_PROXIES",
    "pickled_models": "WML_SERVER_PICKLED_MODELS", "model_max_bytes": "WML_SERVER_MODEL_MAX_BYTES",
    "model_sandbox": "WML_SERVER_MODEL_SANDBOX", "model_memory_limit_mb": "WML_SERVER_MODEL_MEMORY_LIMIT_MB",
    "model_load_timeout": "WML_SERVER_MODEL_LOAD_TIMEOUT", "model_predict_timeout": "WML_SERVER_MODEL_PREDICT_TIMEOUT",
    "scoring_workers": "WML_SERVER_SCORING_WORKERS",
    "spark_masters": "WML_SERVER_SPARK_MASTERS", "spark_jars": "WML_SERVER_SPARK_JARS",
    "spark_executor_memory": "WML_SERVER_SPARK_EXECUTOR_MEMORY",
    "spark_cores_per_stream": "WML_SERVER_SPARK_CORES_PER_STREAM",
    "spark_java_options": "WML_SERVER_SPARK_JAVA_OPTIONS",
    "spark_trigger_seconds": "WML_SERVER_SPARK_TRIGGER_SECONDS",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES.values():
        monkeypatch.delenv(name, raising=False)


def parse(*argv: str) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_namespace(parser.parse_args(argv))


def test_every_variable_and_flag_keeps_its_name() -> None:
    assert {name: env_var(name) for name in Settings.model_fields} == VARIABLES
    assert flag("token_ttl_seconds") == "--token-ttl-seconds"


def test_defaults() -> None:
    s = parse()
    assert (s.host, s.port, s.token_ttl_seconds, s.run_streams, s.rate_limit) == ("127.0.0.1", 9443, 8 * 3600, True, 0)
    assert s.scoring_workers == usable_cores()  # a scoring worker per core the service may use
    assert parse("--scoring-workers", "0").scoring_workers == 0  # 0: in the service's own process
    assert s.signing_key_file is None  # the service's own key, in its database


def test_model_worker_timeouts_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = parse()
    assert (s.model_load_timeout, s.model_predict_timeout) == (120.0, 60.0)  # WorkerOptions' defaults
    monkeypatch.setenv("WML_SERVER_MODEL_PREDICT_TIMEOUT", "2.5")
    s = parse("--model-load-timeout", "15")
    assert (s.model_load_timeout, s.model_predict_timeout) == (15.0, 2.5)
    with pytest.raises(SystemExit, match="model-predict-timeout"):
        parse("--model-predict-timeout", "0")


def test_variables_are_read_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WML_SERVER_TOKEN_TTL", "7")
    monkeypatch.setenv("WML_SERVER_RUN_STREAMS", "false")
    monkeypatch.setenv("WML_SERVER_PORT", "1000")
    monkeypatch.setenv("WML_SERVER_LOG_LEVEL", "WARNING")
    s = parse("--port", "2000")
    assert (s.token_ttl_seconds, s.run_streams, s.port, s.log_level) == (7, False, 2000, "warning")
    assert parse("--token-ttl-seconds", "9").token_ttl_seconds == 9


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WML_SERVER_TLS_CERT", "")
    monkeypatch.setenv("WML_SERVER_TLS_KEY", "")
    assert parse().tls_cert is None


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--tls-cert", "c.pem"], {}, "--tls-cert and --tls-key (WML_SERVER_TLS_CERT and WML_SERVER_TLS_KEY) go together"),
    (["--port", "x"], {}, "--port (WML_SERVER_PORT): Input should be a valid integer"),
    ([], {"WML_SERVER_TOKEN_TTL": "soon"}, "--token-ttl-seconds (WML_SERVER_TOKEN_TTL): Input should be a valid"),
    ([], {"WML_SERVER_RUN_STREAMS": "maybe"}, "--run-streams (WML_SERVER_RUN_STREAMS): Input should be a valid"),
])
def test_refusals_name_the_flag_and_the_variable(monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                 env: dict[str, str], message: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=re.escape(message)):
        parse(*argv)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), (ANY, False), ("::", False), ("10.1.2.3", False), ("wml.example", False),
    ("", False)])
def test_loopback_is_only_what_never_leaves_the_machine(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("argv", "env", "refused"), [
    ([], {}, False),  # the default: 127.0.0.1
    (["--host", "::1"], {}, False),
    (["--host", "localhost"], {}, False),
    (["--host", ANY], {}, True),
    ([], {"WML_SERVER_HOST": ANY}, True),  # the image's setting, without TLS
    (["--host", "10.1.2.3"], {}, True),
    (["--host", ANY, "--tls-cert", "c.pem", "--tls-key", "k.pem"], {}, False),
    (["--host", ANY, "--plain-http", "true"], {}, False),
    ([], {"WML_SERVER_HOST": ANY, "WML_SERVER_PLAIN_HTTP": "true"}, False),
    (["--host", ANY, "--plain-http", "false"], {}, True),
])
def test_plain_http_off_loopback_is_an_explicit_choice(monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                       env: dict[str, str], refused: bool) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    problem = parse(*argv).exposure_problem()
    assert (problem is not None) is refused
    if problem:
        for named in ("--tls-cert", "WML_SERVER_TLS_CERT", "--plain-http", "WML_SERVER_PLAIN_HTTP=true"):
            assert named in problem


def test_serve_refuses_plain_http_off_loopback_before_anything_starts(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match=r"--host 0\.0\.0\.0 is not a loopback address"):
        main(["serve", "--host", ANY, "--port", "0", "--data-dir", str(tmp_path / "data")])
    assert not (tmp_path / "data").exists()  # refused before the database or any key is touched


def test_only_serve_applies_the_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The image sets WML_SERVER_HOST=0.0.0.0 for every command: its init container's add-user must still run."""
    monkeypatch.setenv("WML_SERVER_HOST", ANY)
    assert main(["list-users", "--data-dir", str(tmp_path / "data")]) == 0


def test_help_lists_every_setting_with_its_variable() -> None:
    out = subprocess.run([sys.executable, "-m", "wml_server", "serve", "--help"], capture_output=True, text=True,
                         check=True, timeout=60, env={"PATH": ""}).stdout
    out = " ".join(out.split())  # argparse wraps lines
    for name, variable in VARIABLES.items():
        assert flag(name) in out
        assert f"env {variable};" in out
        description = Settings.model_fields[name].description
        assert description is not None
        assert description in out


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("max 100000\n", None), ("100000 100000\n", 1), ("150000 100000\n", 2), ("1000 100000\n", 1),
    ("garbage\n", None), (None, None)])
def test_scoring_workers_default_to_the_cores_within_a_cpu_quota(cpu_max: str | None, expected: int | None,
                                                                  tmp_path: Path) -> None:
    """A pod limited to 1.5 CPUs on a node of many cores gets 2 workers a stream, not one per node core."""
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(path) == (affinity if expected is None else min(affinity, expected))
