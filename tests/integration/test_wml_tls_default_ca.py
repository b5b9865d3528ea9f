"""TLS where traffic leaves loopback, end to end on 127.0.0.1: the real service serving the certificate that
deploy/bootstrap-tls.sh makes, from files laid out as a Secret volume (..data swapped on renewal).

- an ssl client with the CA verifies it for each of the Service's names (server_hostname), and for no other;
- the operator's reconciler, with no spec.wml, reaches it with the default CA (WML_OPERATOR_WML_CA_SECRET);
  a wrong CA is Stalled WMLTLSError, a missing CA Secret Stalled naming the setting: never a fall-back;
- a renewal (new files) is served without a restart, and a rotated CA Secret is used by the next pass.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_bootstrap_tls import NAMES, bootstrap
from wml_localplatform.wmlservice import WMLService, WMLUser, make_key_file
from wml_operator.reconcile import Reconciler
from wml_operator.resources import Resources
from wml_operator.secrets import Defaults
from wml_operator.status import Outcome
from wml_operator.wml import Instances

OPS, TEAM = "wml-stream-operator", "team"
MODEL = "3b1f3d7e-5c1a-4d8e-9b7a-6f0e2c9d4a11"
SPARK = {"tenant_id": "t", "tenant_id_full": "tf", "cluster_master_url": "https://s", "instance_id": "i",
         "tenant_secret": "ts", "plan": "p"}


def make_pair(directory: Path) -> Path:
    """A CA and a certificate for the Service's names (and 127.0.0.1, which the harness' health check dials)."""
    result = bootstrap("--dir", str(directory), "--no-apply", "--san", "127.0.0.1")
    assert result.returncode == 0, result.stderr
    return directory


def swap(volume: Path, pair: Path) -> None:
    """What the kubelet does to a Secret volume: a new ..data, swapped in by one rename."""
    link = volume / "..data.new"
    link.symlink_to(pair)
    os.replace(link, volume / "..data")


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    volume = tmp_path / "wml-server-tls"
    volume.mkdir()
    swap(volume, make_pair(tmp_path / "v1"))
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (volume / name).symlink_to(f"..data/{name}")
    return volume


@pytest.fixture
def service(make_wml_service: Callable[..., WMLService], volume: Path) -> WMLService:
    return make_wml_service(ca_file=volume / "ca.crt", WML_SERVER_RUN_STREAMS="false",
                            WML_SERVER_TLS_CERT=str(volume / "tls.crt"), WML_SERVER_TLS_KEY=str(volume / "tls.key"),
                            WML_SERVER_TLS_RELOAD_SECONDS="0.2")


def handshake(port: int, name: str, cafile: Path | None) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            context.wrap_socket(sock, server_hostname=name) as tls:
        return dict(tls.getpeercert() or {})


def test_the_bootstrap_certificate_verifies_for_each_service_name(service: WMLService, volume: Path) -> None:
    for name in NAMES:
        cert = handshake(service.port, name, volume / "ca.crt")
        assert ("DNS", name) in cert["subjectAltName"]
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(service.port, "wml-server.other-namespace.svc", volume / "ca.crt")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(service.port, NAMES[2], None)  # the system's trust store does not know this CA


class Secrets:
    """A SecretReader over (namespace, name) -> data, as the operator's Secret store answers."""

    def __init__(self, data: dict[tuple[str, str], dict[str, str]]) -> None:
        self.data = data

    def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.data.get((namespace, name))


@pytest.fixture
def world(service: WMLService, volume: Path) -> Iterator[tuple[Reconciler, Secrets, WMLUser]]:
    user = service.add_user()
    secrets = Secrets({
        (OPS, "wml-credentials"): {"username": user.username, "password": user.password},
        (OPS, "wml-server-tls"): {"tls.crt": (volume / "tls.crt").read_text(), "tls.key": "(not read)",
                                  "ca.crt": (volume / "ca.crt").read_text()},
        (TEAM, "kafka"): {"kafka_brokers_sasl": "127.0.0.1:9", "user": "u", "password": "p",
                          "security_protocol": "SASL_PLAINTEXT"},
        (TEAM, "spark"): {"credentials.json": json.dumps(SPARK)},
    })
    defaults = Defaults(url=service.url, instance_id=user.instance_id, credentials_secret=f"{OPS}/wml-credentials",
                        ca_secret=f"{OPS}/wml-server-tls")
    instances = Instances()
    yield Reconciler(secrets, instances, Resources(0.0, 0.0), defaults), secrets, user
    instances.pool.close()


def body(status: dict[str, Any] | None = None, uid: str | None = None) -> dict[str, Any]:
    """A StreamingDeployment without spec.wml: the operator's default endpoint."""
    return {"metadata": {"uid": uid or str(uuid.uuid4()), "namespace": TEAM, "name": "tweets", "generation": 1},
            "spec": {"state": "RUNNING", "modelId": MODEL,
                     "sparkCredentialsSecretRef": {"name": "spark", "key": "credentials.json"},
                     "input": {"topic": "in", "connectionSecretRef": {"name": "kafka"}},
                     "output": {"topic": "out", "connectionSecretRef": {"name": "kafka"}}},
            "status": status or {}}


def condition(outcome: Outcome, kind: str) -> dict[str, Any]:
    return next(c for c in outcome.status["conditions"] if c["type"] == kind)


def test_the_operator_verifies_the_default_endpoint_with_the_default_ca(
        world: tuple[Reconciler, Secrets, WMLUser], tmp_path: Path) -> None:
    reconciler, secrets, _ = world
    b = body()
    created = reconciler.run(b)
    assert created.status["deploymentId"], created.status
    assert created.status["endpoint"]["url"].startswith("https://")
    ready = reconciler.run({**b, "status": created.status})
    assert condition(ready, "Ready")["status"] == "True"

    # A CA that did not sign the served certificate: Stalled, with the TLS failure, and nothing else tried.
    secrets.data[(OPS, "wml-server-tls")]["ca.crt"] = (make_pair(tmp_path / "other") / "ca.crt").read_text()
    wrong = reconciler.run(body())
    stalled = condition(wrong, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "WMLTLSError")
    assert "TLS with 127.0.0.1" in stalled["message"]
    assert "unable to get local issuer certificate" in stalled["message"]
    assert wrong.retry_after is None  # needs a fix (the Secret): no retry loop, no fall-back to unverified
    assert "deploymentId" not in wrong.status

    # No CA Secret at all: Stalled, naming the setting and the Secret.
    del secrets.data[(OPS, "wml-server-tls")]
    missing = condition(reconciler.run(body()), "Stalled")
    assert (missing["status"], missing["reason"]) == ("True", "SecretNotFound")
    assert "WML_OPERATOR_WML_CA_SECRET" in missing["message"]
    assert f"{OPS}/wml-server-tls" in missing["message"]


def test_a_renewal_is_served_without_a_restart_and_a_rotated_ca_used_at_once(
        world: tuple[Reconciler, Secrets, WMLUser], service: WMLService, volume: Path, tmp_path: Path) -> None:
    reconciler, secrets, _ = world
    pid = service.proc.pid if service.proc else None
    old_ca = (volume / "ca.crt").read_text()
    swap(volume, make_pair(tmp_path / "v2"))  # a new CA and certificate, as bootstrap-tls.sh renews
    deadline = time.monotonic() + 15
    while True:
        try:
            handshake(service.port, NAMES[2], volume / "ca.crt")
            break
        except ssl.SSLCertVerificationError:
            assert time.monotonic() < deadline, "the renewed certificate was not served"
            time.sleep(0.2)
    assert service.proc is not None
    assert service.proc.pid == pid
    assert service.proc.poll() is None  # the same process, still serving

    # The Secret's ca.crt as bootstrap-tls.sh writes it on a renewal: the new CA, then the previous one.
    secrets.data[(OPS, "wml-server-tls")]["ca.crt"] = (volume / "ca.crt").read_text() + old_ca
    outcome = reconciler.run(body())
    assert outcome.status.get("deploymentId"), outcome.status


def test_a_taken_port_is_a_failed_start(volume: Path, tmp_path: Path) -> None:
    """serve builds uvicorn's server itself (to reload the certificate): a bind that fails still exits 3, as
    uvicorn.run did, not 0 for a service that never served."""
    key_file = make_key_file(tmp_path / "keys" / "wml.key")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "wml_server", "serve", "--port", str(taken.getsockname()[1]),
             "--data-dir", str(tmp_path / "data"), "--key-file", str(key_file), "--run-streams", "false",
             "--scoring-workers", "0", "--tls-cert", str(volume / "tls.crt"), "--tls-key", str(volume / "tls.key")],
            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 3, result.stderr
    assert "address already in use" in result.stderr
