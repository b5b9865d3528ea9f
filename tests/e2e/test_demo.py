"""`make demo`'s script, run as CI runs it (non-interactive), judged by what it prints.

It starts a platform of its own in a temporary folder on free ports (the WML service too), so it never meets
the session's platform of the other tests, and `down` removes it whatever happened.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wml_localplatform.kafka import KafkaInfo

ROOT = Path(__file__).resolve().parents[2]
# A row of `kubectl get sdep -o wide` (NAME STATE STATUS READY REASON AGE DEPLOYMENT MODEL).
ROW = r"^\s+tweet-sentiment\s+{state}\s+{status}\s+{ready}\s+{reason}\s"


def run_demo(directory: Path, *args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("KUBECONFIG", "WSO_KAFKA_BOOTSTRAP", "WSO_KAFKA_USERNAME", "WSO_KAFKA_PASSWORD")}
    base.update({"WSO_DEMO_DIR": str(directory), "WSO_DEMO_NONINTERACTIVE": "1",
                 "WSO_DEMO_WML_PORT": "0", **env})
    return subprocess.run([sys.executable, "-m", "wml_localplatform.demo", *args], capture_output=True, text=True,
                          env=base, cwd=ROOT, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


@pytest.fixture
def demo_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "demo"
    yield directory
    run_demo(directory, "down", timeout=120)


def pids(directory: Path) -> list[int]:
    return sorted(int(p.read_text().split()[0]) for p in directory.rglob("*.pid"))


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wml_password(directory: Path) -> str:
    kubeconfig = directory / "kube" / "admin.kubeconfig"
    result = subprocess.run([str(directory / "bin" / "kubectl"), f"--kubeconfig={kubeconfig}", "get", "secret",
                             "wml-credentials", "-n", "marketing", "-o", "jsonpath={.data.password}"],
                            capture_output=True, text=True, timeout=30, check=True)
    return base64.b64decode(result.stdout).decode()


def test_demo_runs_the_scenario_is_harmless_twice_and_goes_down(demo_dir: Path) -> None:
    first = run_demo(demo_dir, "up")
    out = first.stdout
    assert first.returncode == 0, f"{out}\n{first.stderr}"
    assert "Traceback" not in first.stderr

    # Ready reached, as `kubectl get sdep -o wide --watch` showed it.
    assert re.search(ROW.format(state="RUNNING", status="RUNNING", ready="True", reason="Running"), out, re.M), out
    assert re.search(r"Ready after [\d.]+ s: WML deployment [0-9a-f-]{36} is RUNNING", out)
    # Records scored: a sample of them, all of the first batch, and the summary table.
    assert len(re.findall(r"^\s+(?:POSITIVE|NEGATIVE) [01]\.\d\d  \S", out, re.M)) >= 10
    assert "scored 240 of 240 tweets" in out
    agreement = re.search(r"agreement with the human raters: (\d+) of 240 \(([\d.]+) %\)", out)
    assert agreement
    assert float(agreement.group(2)) > 70
    # STOPPED: Ready and STOPPED, and the output stops.
    assert re.search(ROW.format(state="STOPPED", status="STOPPED", ready="True", reason="Stopped"), out, re.M), out
    assert "while STOPPED: 0 records scored in 5 s (60 tweets waiting on tweets)" in out
    # RUNNING again: what was sent meanwhile is scored, nothing twice.
    after = out[out.index("Starting it again"):]
    assert re.search(ROW.format(state="RUNNING", status="RUNNING", ready="True", reason="Running"), after, re.M), after
    assert ("60 records sent while stopped were scored; 300 tweets in, 300 scored, none twice, none missing"
            in after)
    assert "agreement with the human raters: " in after
    # The data scientist's model: shared at a URL, declared in Git with the stream that references it (one
    # apply), published by the operator, deployed beside VADER, same tweets.
    own = out[out.index("A data scientist shares a model"):]
    assert re.search(r"shares it at http://127\.0\.0\.1:\d+/tweets-sklearn\.skops$", own, re.M), own
    assert "kind: PublishedModel" in own
    assert re.search(r"^\s*published as model [0-9a-f-]{36}, version [0-9a-f-]{36} \(sha256 [0-9a-f]{12}\.\.\.\)",
                     own, re.M), own
    assert re.search(r"^\s+tweet-sentiment-sklearn\s+RUNNING\s+RUNNING\s+True\s+Running\s", own, re.M)
    assert "scored 300 of 300 tweets" in own
    sklearn = re.search(r"^\s*Tweet sentiment \(scikit-learn\)\s+(\d+) of 300 \(([\d.]+) %\)\s+([\d.]+)$", own, re.M)
    assert sklearn, own
    assert float(sklearn.group(2)) > 70
    assert re.search(r"^\s*VADER \(Sentiment Prediction\)\s+\d+ of 300 ", own, re.M)
    assert re.search(r"the two models give the same label to \d+ of 300 tweets", own)
    # How to look around and how to stop it; never a credential.
    assert f"export KUBECONFIG={demo_dir / 'kube' / 'admin.kubeconfig'}" in out
    assert "/v3/identity/token" in out
    assert "make demo-down" in out
    kafka = KafkaInfo.from_json((demo_dir / "kafka" / "info.json").read_text())
    for secret in [wml_password(demo_dir), *(u.password for u in kafka.users)]:
        assert secret not in out
        assert secret not in first.stderr

    started = pids(demo_dir)
    assert started
    assert all(alive(p) for p in started), "the demo's processes must outlive its script"
    second = run_demo(demo_dir, "up", timeout=60)
    assert second.returncode == 0, f"{second.stdout}\n{second.stderr}"
    assert "already running" in second.stdout
    assert pids(demo_dir) == started
    assert re.search(r"^\s+marketing\s+tweet-sentiment\s+RUNNING\s+RUNNING\s+True", second.stdout, re.M)

    down = run_demo(demo_dir, "down", timeout=120)
    assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
    assert "stopped: operator, WML service, model server, Kafka, Kubernetes" in down.stdout
    assert not demo_dir.exists()
    assert not [p for p in started if alive(p)]


def test_a_taken_port_fails_clearly_before_starting_anything(demo_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_demo(demo_dir, "up", timeout=60, WSO_DEMO_WML_PORT=str(port))
    assert result.returncode == 2
    assert f"error: port {port} on 127.0.0.1 is taken" in result.stderr
    assert "Traceback" not in result.stderr
    assert not demo_dir.exists()


def test_missing_prerequisites_are_named_with_what_to_install(demo_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv("JAVA_HOME", raising=False)
    result = run_demo(demo_dir, "up", timeout=60, PATH=str(empty), WSO_CACHE=str(tmp_path / "no-cache"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: the local platform is not ready:")
    assert "run `make platform-build`" in result.stderr
    assert "java is not installed: install a Java 17+ runtime" in result.stderr
    assert not demo_dir.exists()
