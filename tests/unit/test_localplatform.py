"""The local platform's pure parts: versions, broker configuration, kubeconfigs, certificates."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import yaml
from cryptography import x509

from wml_localplatform.certs import CertificateAuthority
from wml_localplatform.config import ROOT, PlatformConfig, read_versions
from wml_localplatform.kafka import KafkaInfo, KafkaUser, server_properties
from wml_localplatform.kube import kubeconfig_yaml


def test_versions_are_pinned() -> None:
    versions = read_versions()
    assert versions["K8S_VERSION"].startswith("v1.")
    assert versions["KAFKA_VERSION"].startswith("4.")
    config = PlatformConfig.load()
    assert config.k8s_version == versions["K8S_VERSION"]


def test_broker_properties_bind_loopback_with_sasl_and_no_auto_create(tmp_path: Path) -> None:
    users = [KafkaUser("admin", "pw-a"), KafkaUser("wml", "pw-w")]
    props = dict(line.split("=", 1) for line in server_properties(tmp_path, 9092, 9093, users).splitlines())
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["auto.create.topics.enable"] == "false"
    assert props["sasl.enabled.mechanisms"] == "PLAIN"
    jaas = props["listener.name.sasl_plaintext.plain.sasl.jaas.config"]
    assert 'user_admin="pw-a"' in jaas
    assert 'user_wml="pw-w"' in jaas
    assert jaas.endswith(";")
    # Exactly-once streams need a transaction log that a single broker can host.
    assert props["transaction.state.log.replication.factor"] == "1"


def test_kafka_info_round_trips_and_hides_passwords_from_repr() -> None:
    info = KafkaInfo("127.0.0.1:1", [KafkaUser("admin", "hunter2"), KafkaUser("wml", "pw2")], "4.1.1", 1.0)
    assert KafkaInfo.from_json(info.to_json()) == info
    assert "hunter2" not in repr(info)
    config = info.client_config("wml", **{"group.id": "g"})
    assert config["sasl.username"] == "wml"
    assert config["sasl.password"] == "pw2"
    assert config["group.id"] == "g"
    assert info.client_config()["sasl.username"] == "admin"


def test_kubeconfig_embeds_everything(tmp_path: Path) -> None:
    text = kubeconfig_yaml("https://127.0.0.1:6443", b"CA", "admin", cert_pem=b"CERT", key_pem=b"KEY")
    doc = yaml.safe_load(text)
    assert doc["current-context"] == "admin@wso-local"
    assert base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(doc["users"][0]["user"]["client-key-data"]) == b"KEY"
    token_only = yaml.safe_load(kubeconfig_yaml("https://x", b"CA", "sa", token="t0k"))
    assert token_only["users"][0]["user"] == {"token": "t0k"}


def test_issued_certificates_chain_to_the_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    server = ca.issue("srv", "kube-apiserver", server=True)
    client = ca.issue("adm", "wso-admin", organization="system:masters", client=True)
    cert = x509.load_pem_x509_certificate(server.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    adm = x509.load_pem_x509_certificate(client.cert.read_bytes())
    assert adm.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert adm.issuer == x509.load_pem_x509_certificate(ca.cert_pem).subject
    assert oct(client.key.stat().st_mode & 0o777) == "0o600"
    # The standard library accepts the pair and the CA as a trust store.
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    ctx.load_cert_chain(str(client.cert), str(client.key))


def test_pyspark_pin_is_the_platforms_spark_version() -> None:
    """pyproject's `spark` extra installs the pyspark whose Kafka connector hack/fetch-spark-jars.sh caches."""
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["optional-dependencies"]["spark"] if d.startswith("pyspark")]
    assert pins == [f"pyspark=={read_versions()['SPARK_VERSION']}"]
    assert PlatformConfig.load().spark_version == read_versions()["SPARK_VERSION"]
