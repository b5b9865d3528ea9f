"""The CRD in crds/ is generated from wml_operator.spec; this fails when the two disagree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from wml_operator import crd

FILE = Path(__file__).resolve().parents[2] / "crds" / "wmlstream.dev_streamingdeployments.yaml"


def _walk(node: Any, path: str = "") -> list[str]:
    """Paths of schema properties without a description."""
    missing = []
    if isinstance(node, dict) and "properties" in node:
        for name, child in node["properties"].items():
            here = f"{path}.{name}"
            if name not in ("metadata",) and not child.get("description"):
                missing.append(here)
            missing += _walk(child, here)
            missing += _walk(child.get("items", {}), here + "[]")
    return missing


def test_crd_file_is_generated_from_the_models() -> None:
    assert FILE.read_text() == crd.render(), "run: python -m wml_operator.crd > " + str(FILE)


def test_every_field_is_documented_and_structural() -> None:
    doc = yaml.safe_load(FILE.read_text())
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema["properties"]["spec"], "spec") == []
    assert _walk(schema["properties"]["status"], "status") == []
    text = FILE.read_text()
    for forbidden in ("$ref", "anyOf", "x-kubernetes-preserve-unknown-fields", "additionalProperties", "title:"):
        assert forbidden not in text
    spec = schema["properties"]["spec"]
    assert set(spec["required"]) == {"sparkCredentialsSecretRef", "input", "output"}
    # modelId or modelRef, exactly one: the apiserver refuses both and neither.
    assert spec["x-kubernetes-validations"] == [{"message": "exactly one of modelId and modelRef must be set",
                                                 "rule": "has(self.modelId) != has(self.modelRef)"}]
    assert spec["properties"]["state"]["enum"] == ["RUNNING", "STOPPED"]
    assert spec["properties"]["state"]["default"] == "RUNNING"
    assert spec["properties"]["deletionPolicy"]["enum"] == ["Delete", "Orphan"]


def test_names_and_columns() -> None:
    doc = yaml.safe_load(FILE.read_text())
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "StreamingDeployment", "streamingdeployments", ["sdep"], ["wml"])
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [(c["name"], c.get("priority", 0)) for c in version["additionalPrinterColumns"]]
    assert columns == [("State", 0), ("Status", 0), ("Ready", 0), ("Reason", 0), ("Age", 0), ("Deployment", 1),
                       ("Model", 1), ("Lag", 1)]


MODELS_FILE = FILE.parent / "wmlstream.dev_publishedmodels.yaml"


def test_published_model_crd_file_is_generated_from_the_models() -> None:
    assert MODELS_FILE.read_text() == crd.render("publishedmodels"), \
        "run: python -m wml_operator.crd publishedmodels > " + str(MODELS_FILE)


def test_published_model_every_field_is_documented_and_structural() -> None:
    doc = yaml.safe_load(MODELS_FILE.read_text())
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema["properties"]["spec"], "spec") == []
    assert _walk(schema["properties"]["status"], "status") == []
    text = MODELS_FILE.read_text()
    for forbidden in ("$ref", "anyOf", "additionalProperties", "title:"):
        assert forbidden not in text
    # The one free-form field: Spark's StructType JSON (see the comment in published/spec.py).
    assert text.count("x-kubernetes-preserve-unknown-fields") == 1
    spec = schema["properties"]["spec"]
    assert spec["properties"]["inputDataSchema"]["x-kubernetes-preserve-unknown-fields"] is True
    assert set(spec["required"]) == {"framework", "source"}
    assert "scikit-learn" in spec["properties"]["framework"]["properties"]["name"]["enum"]
    assert spec["properties"]["deletionPolicy"]["enum"] == ["Delete", "Orphan"]
    assert "default" not in spec["properties"]["deletionPolicy"]  # Orphan for an adopted model
    assert spec["properties"]["checkIntervalSeconds"]["minimum"] == 10
    rules = spec["properties"]["source"]["x-kubernetes-validations"]
    assert "configMapRef" in rules[0]["rule"]


def test_published_model_names_and_columns() -> None:
    doc = yaml.safe_load(MODELS_FILE.read_text())
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "PublishedModel", "publishedmodels", ["pmodel"], ["wml"])
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Framework", "Model", "Digest", "Ready", "Reason", "Age"]


def test_both_crds_are_in_the_kustomization() -> None:
    kustomization = yaml.safe_load((FILE.parent / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [FILE.name, MODELS_FILE.name]
