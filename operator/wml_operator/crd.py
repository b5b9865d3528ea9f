"""Generates the CustomResourceDefinitions from the pydantic models in wml_operator.spec and
wml_operator.published.spec.

    python -m wml_operator.crd > crds/wmlstream.dev_streamingdeployments.yaml
    python -m wml_operator.crd publishedmodels > crds/wmlstream.dev_publishedmodels.yaml
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from wml_operator import spec as s
from wml_operator.published import spec as pm

# Keys of pydantic's JSON schema that a CRD's structural schema does not take.
_DROP = {"title", "$defs", "additionalProperties", "discriminator"}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "State", "type": "string", "jsonPath": ".spec.state", "description": "Declared state"},
    {"name": "Status", "type": "string", "jsonPath": ".status.wmlStatus", "description": "Status in WML"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
    {"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Deployment", "type": "string", "jsonPath": ".status.deploymentId", "priority": 1},
    {"name": "Model", "type": "string", "jsonPath": ".status.modelId", "priority": 1},
    {"name": "Lag", "type": "integer", "jsonPath": ".status.lag", "priority": 1,
     "description": "Records of the input topic not read yet"},
]


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Inlines $refs, turns Optional[X] into X, drops what structural schemas refuse."""
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            merged = {**_structural(options[0], defs), **_structural(rest, defs)}
            if merged.get("default", ...) is None:
                merged.pop("default")
            return merged
    out = {k: _structural(v, defs) for k, v in node.items() if k not in _DROP}
    if out.get("default", ...) is None:
        out.pop("default")
    return out


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    result: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return result


@dataclass(frozen=True)
class Kind:
    """One custom resource the operator serves, as its CRD describes it."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: list[dict[str, Any]]
    description: str
    source: str  # the module the models are in, for the generated file's header


MODEL_COLUMNS: list[dict[str, Any]] = [
    {"name": "Framework", "type": "string", "jsonPath": ".spec.framework.name", "description": "The framework"},
    {"name": "Model", "type": "string", "jsonPath": ".status.modelId", "description": "Id of the model in WML"},
    {"name": "Digest", "type": "string", "jsonPath": ".status.digestShort",
     "description": "SHA-256 of the published content (first 12 hex characters)"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
    {"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

KINDS: dict[str, Kind] = {
    s.PLURAL: Kind(s.KIND, s.PLURAL, s.SINGULAR, s.SHORT_NAMES, s.StreamingDeploymentSpec,
                   s.StreamingDeploymentStatus, PRINTER_COLUMNS,
                   "A stream deployment of a published WML model: records from a Kafka topic scored onto another, "
                   "declared in Kubernetes and run through the WML v3 API.", "operator/wml_operator/spec.py"),
    pm.PLURAL: Kind(pm.KIND, pm.PLURAL, pm.SINGULAR, pm.SHORT_NAMES, pm.PublishedModelSpec, pm.PublishedModelStatus,
                    MODEL_COLUMNS,
                    "A model published to WML's repository from a URL (with its SHA-256), a ConfigMap, or adopted "
                    "by id, declared in Kubernetes; StreamingDeployments reference it by name.",
                    "operator/wml_operator/published/spec.py"),
}


def build_crd(plural: str = s.PLURAL) -> dict[str, Any]:
    k = KINDS[plural]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{k.plural}.{s.GROUP}",
                     "labels": {"app.kubernetes.io/name": "wml-stream-operator"}},
        "spec": {
            "group": s.GROUP,
            "scope": "Namespaced",
            "names": {"kind": k.kind, "plural": k.plural, "singular": k.singular, "shortNames": k.short_names,
                      "categories": s.CATEGORIES, "listKind": f"{k.kind}List"},
            "versions": [{
                "name": s.VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": k.columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": k.description,
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string", "description": "APIVersion of this object."},
                        "kind": {"type": "string", "description": "Kind of this object."},
                        "metadata": {"type": "object"},
                        "spec": schema_of(k.spec),
                        "status": schema_of(k.status),
                    },
                }},
            }],
        },
    }


def header(plural: str) -> str:
    command = "python -m wml_operator.crd" + ("" if plural == s.PLURAL else f" {plural}")
    return f"# Generated by `{command}` from {KINDS[plural].source}; do not edit.\n"


def render(plural: str = s.PLURAL) -> str:
    return header(plural) + yaml.safe_dump(build_crd(plural), sort_keys=False, width=120)


if __name__ == "__main__":
    chosen = sys.argv[1] if len(sys.argv) > 1 else s.PLURAL
    if chosen not in KINDS:
        sys.exit(f"usage: python -m wml_operator.crd [{' | '.join(KINDS)}]")
    sys.stdout.write(render(chosen))
