"""deploy/samples as the demo applies them: the StreamingDeployments, the PublishedModel and the Secrets, with
local values."""

from __future__ import annotations

from typing import Any

import yaml

from wml_localplatform.config import ROOT
from wml_localplatform.demo.errors import DemoError

SAMPLES = ROOT / "deploy" / "samples"
SAMPLE = SAMPLES / "wmlstream.dev_v1alpha1_streamingdeployment.yaml"
SAMPLE_SECRETS = SAMPLES / "secrets.yaml"
SAMPLE_MODEL = SAMPLES / "wmlstream.dev_v1alpha1_publishedmodel.yaml"
SAMPLE_MODELREF = SAMPLES / "wmlstream.dev_v1alpha1_streamingdeployment-modelref.yaml"


def sample_resource(namespace: str, wml_url: str) -> dict[str, Any]:
    """deploy/samples' StreamingDeployment, in our namespace and pointed at the local WML service."""
    doc: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["wml"]["url"] = wml_url
    return doc


def sample_model_pair(namespace: str, wml_url: str, model_url: str, sha256: str) -> list[dict[str, Any]]:
    """deploy/samples' PublishedModel and the StreamingDeployment that references it, in our namespace, pointed
    at the local WML service, with the model's URL and digest."""
    model: dict[str, Any] = yaml.safe_load(SAMPLE_MODEL.read_text())
    stream: dict[str, Any] = yaml.safe_load(SAMPLE_MODELREF.read_text())
    for doc in (model, stream):
        doc["metadata"]["namespace"] = namespace
        doc["spec"]["wml"]["url"] = wml_url
    model["spec"]["source"]["url"] = {"url": model_url, "sha256": sha256}
    return [model, stream]


def sample_secrets(resource: dict[str, Any], namespace: str, wml: dict[str, str], kafka: dict[str, str],
                   spark_json: str) -> list[dict[str, Any]]:
    """deploy/samples/secrets.yaml with every placeholder replaced by the local platform's real values."""
    spec = resource["spec"]
    values = {
        spec["wml"]["credentialsSecretRef"]["name"]: wml,
        spec["input"]["connectionSecretRef"]["name"]: kafka,
        spec["output"]["connectionSecretRef"]["name"]: kafka,
        spec["sparkCredentialsSecretRef"]["name"]: {spec["sparkCredentialsSecretRef"]["key"]: spark_json},
    }
    docs = [d for d in yaml.safe_load_all(SAMPLE_SECRETS.read_text()) if d]
    for doc in docs:
        name = doc["metadata"]["name"]
        if name not in values:
            raise DemoError(f"{SAMPLE_SECRETS.relative_to(ROOT)}: Secret {name} is not referenced by the sample")
        unknown = set(doc.get("stringData", {})) - set(values[name])
        if unknown:
            raise DemoError(f"{SAMPLE_SECRETS.relative_to(ROOT)}: the demo has no value for {name}'s keys "
                            f"{sorted(unknown)}")
        doc["metadata"]["namespace"] = namespace
        doc["stringData"] = values[name]
    missing = set(values) - {d["metadata"]["name"] for d in docs}
    if missing:
        raise DemoError(f"{SAMPLE_SECRETS.relative_to(ROOT)} lacks the Secrets {sorted(missing)}")
    return docs
