"""deploy/bootstrap-tls.sh, the TLS of components/wml-server without cert-manager: the certificate it makes has
the Service's names, is signed by the CA it puts beside it, and goes into the Secret the component mounts, with
the previous CA kept for the overlap of a renewal. kubectl is a stub here that records what would be applied
(`create --dry-run=client` is the real one's); tests/integration/test_wml_tls_default_ca.py serves the result."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from wml_localplatform.config import MissingPrerequisite, PlatformConfig

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "bootstrap-tls.sh"
NAMES = ["wml-server", "wml-server.wml-stream-operator", "wml-server.wml-stream-operator.svc",
         "wml-server.wml-stream-operator.svc.cluster.local"]


def bootstrap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if not shutil.which("openssl"):
        pytest.skip("no openssl")
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **(env or {})})


def names(cert: x509.Certificate) -> list[str]:
    return [str(n) for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            .get_values_for_type(x509.DNSName)]


def test_the_certificate_has_the_services_names_and_the_ca_that_signed_it(tmp_path: Path) -> None:
    result = bootstrap("--dir", str(tmp_path / "tls"), "--no-apply", "--days", "30")
    assert result.returncode == 0, result.stderr
    files = {p.name for p in (tmp_path / "tls").iterdir()}
    assert files == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    for key in ("ca.key", "tls.key"):
        assert (tmp_path / "tls" / key).stat().st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "tls" / "tls.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "tls" / "ca.crt").read_bytes())
    assert names(cert) == NAMES
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.SERVER_AUTH]
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert days == 30


def test_other_namespaces_and_extra_names(tmp_path: Path) -> None:
    result = bootstrap("--dir", str(tmp_path / "tls"), "--no-apply", "--namespace", "wml",
                       "--san", "wml.example", "--san", "127.0.0.1")
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "tls" / "tls.crt").read_bytes())
    assert names(cert) == ["wml-server", "wml-server.wml", "wml-server.wml.svc", "wml-server.wml.svc.cluster.local",
                           "wml.example"]
    ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.IPAddress)
    assert [str(ip) for ip in ips] == ["127.0.0.1"]


@pytest.mark.parametrize("args", [["--no-apply"], ["--what"]])
def test_refusals(args: list[str]) -> None:
    result = bootstrap(*args)
    assert result.returncode == 2
    assert "bootstrap-tls.sh:" in result.stderr


@pytest.fixture
def kubectl_stub(tmp_path: Path) -> tuple[Path, Path]:
    """A kubectl on PATH: `get` answers the current Secret's ca.crt (from the file `current`, when there), `apply`
    records its input, anything else is the real kubectl (create --dry-run=client needs no cluster)."""
    try:
        real = PlatformConfig.load().kubectl()
    except MissingPrerequisite:
        pytest.skip("no kubectl")
    stub_dir, record = tmp_path / "bin", tmp_path / "applied"
    stub_dir.mkdir()
    current = tmp_path / "current"
    stub = stub_dir / "kubectl"
    stub.write_text(f"""#!/bin/bash
case " $* " in
  *" get secret "*) [ -f {current} ] && base64 -w0 < {current} && exit 0; echo 'NotFound' >&2; exit 1 ;;
  *" apply "*) echo "$@" > {record}.args; cat > {record}; exit 0 ;;
  *) exec {real} "$@" ;;
esac
""")
    stub.chmod(0o755)
    return stub_dir, tmp_path


def applied(stub: tuple[Path, Path]) -> dict[str, bytes]:
    secret = yaml.safe_load((stub[1] / "applied").read_text())
    assert (secret["kind"], secret["type"]) == ("Secret", "kubernetes.io/tls")
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == ("wml-server-tls", "wml-stream-operator")
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def test_the_secret_holds_what_cert_manager_would_write_and_keeps_the_previous_ca(
        kubectl_stub: tuple[Path, Path]) -> None:
    env = {"PATH": f"{kubectl_stub[0]}:{os.environ['PATH']}"}
    first = bootstrap(env=env)
    assert first.returncode == 0, first.stderr
    data = applied(kubectl_stub)
    assert set(data) == {"tls.crt", "tls.key", "ca.crt"}
    assert "--server-side" in (kubectl_stub[1] / "applied.args").read_text()  # no last-applied copy of the key
    (ca,) = x509.load_pem_x509_certificates(data["ca.crt"])
    x509.load_pem_x509_certificate(data["tls.crt"]).verify_directly_issued_by(ca)
    # A renewal: a new CA first, the one the service still serves second; the run after drops the oldest.
    (kubectl_stub[1] / "current").write_bytes(data["ca.crt"])
    second = bootstrap(env=env)
    assert second.returncode == 0, second.stderr
    assert "previous CA" in second.stdout
    renewed = applied(kubectl_stub)
    new_ca, old_ca = x509.load_pem_x509_certificates(renewed["ca.crt"])
    assert old_ca == ca
    x509.load_pem_x509_certificate(renewed["tls.crt"]).verify_directly_issued_by(new_ca)
    (kubectl_stub[1] / "current").write_bytes(renewed["ca.crt"])
    assert bootstrap(env=env).returncode == 0
    assert x509.load_pem_x509_certificates(applied(kubectl_stub)["ca.crt"])[1] == new_ca
