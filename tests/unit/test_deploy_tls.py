"""TLS of deploy/ as kustomize renders it (`kubectl kustomize`, no cluster): components/wml-server serves HTTPS from
the Secret wml-server-tls and the operator verifies it with that Secret's ca.crt; components/wml-server-cert-manager
makes that Secret for the names the operator dials; bootstrap-tls.sh makes the same one; the image alone never
chooses plain HTTP. What a real kube-apiserver says of deploy/ is in tests/integration/test_deploy_dry_run.py."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support import overlay_of_deploy
from tests.unit.test_bootstrap_tls import NAMES, SCRIPT
from wml_localplatform.config import MissingPrerequisite, PlatformConfig
from wml_operator.settings import OperatorSettings, unknown_variables
from wml_server.settings import Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "wml-stream-operator"
Obj = dict[str, Any]


def build(tmp_path: Path, components: list[str]) -> dict[tuple[str, str], Obj]:
    try:
        kubectl = PlatformConfig.load().kubectl()
    except MissingPrerequisite:
        pytest.skip("no kubectl")
    tmp_path.mkdir(exist_ok=True)
    overlay = overlay_of_deploy(tmp_path / "overlay", components)
    out = subprocess.run([str(kubectl), "kustomize", str(overlay)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(out.stdout) if doc}


def env_of(container: Obj) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def settings_from(monkeypatch: pytest.MonkeyPatch, prefix: str, env: Mapping[str, str], cls: type[Any]) -> Any:
    import os

    for name in [n for n in os.environ if n.startswith(prefix)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cls()


@pytest.fixture
def rendered(tmp_path: Path) -> dict[tuple[str, str], Obj]:
    return build(tmp_path, ["wml-server"])


def test_the_service_serves_https_from_the_tls_secret(rendered: dict[tuple[str, str], Obj],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pod = rendered[("Deployment", "wml-server")]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    env = env_of(server)
    assert "WML_SERVER_PLAIN_HTTP" not in env
    settings = settings_from(monkeypatch, "WML_SERVER_", env, Settings)
    assert settings.host == "0.0.0.0"  # noqa: S104 (reached through the Service)
    assert settings.exposure_problem() is None  # it would start: HTTPS, not plain HTTP off loopback
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    for setting in (settings.tls_cert, settings.tls_key):
        mount = mounts[str(setting.parent)]
        assert mount.get("readOnly") is True
        assert "subPath" not in mount  # a subPath mount would never see a renewal
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == "wml-server-tls"
        assert setting.name in {item["path"] for item in secret.get("items", [])}
        assert secret["defaultMode"] & 0o007 == 0  # not world-readable
    for probe in ("livenessProbe", "readinessProbe"):
        assert server[probe]["httpGet"]["scheme"] == "HTTPS"


def test_the_operator_dials_https_and_verifies_with_the_secrets_ca(rendered: dict[tuple[str, str], Obj],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (operator,) = rendered[("Deployment", "wml-stream-operator")]["spec"]["template"]["spec"]["containers"]
    env = env_of(operator)
    assert unknown_variables(env) == []
    settings = settings_from(monkeypatch, "WML_OPERATOR_", env, OperatorSettings)
    url = urlsplit(settings.defaults.url)
    service = rendered[("Service", "wml-server")]
    assert (url.scheme, url.hostname, url.port) == ("https", f"wml-server.{NAMESPACE}.svc",
                                                    service["spec"]["ports"][0]["port"])
    assert url.hostname in NAMES  # a name the certificate has (the bootstrap's and cert-manager's)
    assert settings.defaults.ca_key() == (NAMESPACE, "wml-server-tls", "ca.crt")


def test_the_cert_manager_component_makes_that_secret_for_those_names(tmp_path: Path) -> None:
    docs = build(tmp_path, ["wml-server", "wml-server-cert-manager"])
    cert = docs[("Certificate", "wml-server-tls")]
    for doc in (cert, docs[("Certificate", "wml-server-ca")], docs[("Issuer", "wml-server-ca")],
                docs[("Issuer", "wml-server-selfsigned")]):
        assert doc["apiVersion"] == "cert-manager.io/v1"
        assert doc["metadata"]["namespace"] == NAMESPACE
    assert cert["spec"]["secretName"] == "wml-server-tls"
    assert cert["spec"]["dnsNames"] == NAMES
    assert "server auth" in cert["spec"]["usages"]
    assert not cert["spec"].get("isCA")
    # The chain: the server's Issuer signs with the CA Certificate's Secret, which the self-signed Issuer made.
    issuer = docs[(cert["spec"]["issuerRef"]["kind"], cert["spec"]["issuerRef"]["name"])]
    ca = next(d for d in docs.values() if d["kind"] == "Certificate" and d["spec"].get("isCA"))
    assert issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"] != "wml-server-tls"
    root = docs[(ca["spec"]["issuerRef"]["kind"], ca["spec"]["issuerRef"]["name"])]
    assert root["spec"] == {"selfSigned": {}}
    # The CA outlives many server renewals: ca.crt, what the operator trusts, stays the same across them.
    hours = {d["metadata"]["name"]: int(d["spec"]["duration"].rstrip("h")) for d in (cert, ca)}
    assert hours["wml-server-ca"] >= 10 * hours["wml-server-tls"]
    # Everything else is components/wml-server's, unchanged.
    assert docs.keys() - {("Certificate", "wml-server-tls"), ("Certificate", "wml-server-ca"),
                          ("Issuer", "wml-server-ca"), ("Issuer", "wml-server-selfsigned")} == \
        build(tmp_path / "plain", ["wml-server"]).keys()


def test_the_bootstrap_writes_the_secret_the_component_mounts() -> None:
    text = SCRIPT.read_text()
    assert re.search(r"^namespace=wml-stream-operator$", text, flags=re.MULTILINE)
    assert "create secret generic wml-server-tls --type=kubernetes.io/tls" in text


def test_the_image_alone_never_chooses_plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service image binds 0.0.0.0: whoever runs it gives it a certificate or says plain HTTP themselves."""
    text = (REPO / "Dockerfile").read_text()
    stage = "\n".join(line for line in text[text.index("AS wml-server"):text.index("AS operator")].splitlines()
                      if not line.lstrip().startswith("#"))
    env = dict(re.findall(r"(WML_SERVER_\w+)=(\S+)", stage))
    assert env["WML_SERVER_HOST"] == "0.0.0.0"  # noqa: S104
    assert "WML_SERVER_PLAIN_HTTP" not in env
    assert settings_from(monkeypatch, "WML_SERVER_", env, Settings).exposure_problem()
