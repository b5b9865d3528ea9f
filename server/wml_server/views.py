"""How stored deployments, models and instances look on the wire.

Credentials are masked in every response: the original echoed them back; this service deliberately does not.
"""

from __future__ import annotations

import uuid
from typing import Any

from wml_api.models import mask_secrets as mask
from wml_server.db import DeploymentRecord
from wml_server.models.base import Model


def version_id(model_id: str) -> str:
    """The one version each built-in model has, stable across instances and restarts."""
    return str(uuid.uuid5(uuid.UUID(model_id), "version-1"))


def instance_url(base: str, instance_id: str) -> str:
    return f"{base}/v3/wml_instances/{instance_id}"


def model_url(base: str, instance_id: str, model_id: str) -> str:
    return f"{instance_url(base, instance_id)}/published_models/{model_id}"


def deployment_url(base: str, record: DeploymentRecord) -> str:
    return f"{model_url(base, record.instance_id, record.model_id)}/deployments/{record.id}"


def render_model(base: str, instance_id: str, model: Model, created_at: str, deployments: int) -> dict[str, Any]:
    url = model_url(base, instance_id, model.id)
    return {
        "metadata": {"guid": model.id, "url": url, "created_at": created_at, "modified_at": created_at},
        "entity": {
            "name": model.name, "description": model.description, "model_type": model.model_type,
            "runtime_environment": model.runtime_environment,
            "author": {"name": "wml-stream-operator", "email": ""},
            "input_data_schema": {"type": "struct", "fields": [{"name": "tweet", "type": "string"}]},
            "label_col": "prediction",
            "latest_version": {"guid": version_id(model.id), "url": f"{url}/versions/{version_id(model.id)}",
                               "created_at": created_at},
            "deployments": {"count": deployments, "url": f"{url}/deployments"},
        },
    }


def render_deployment(base: str, record: DeploymentRecord, model: Model | None) -> dict[str, Any]:
    body = record.body
    murl = model_url(base, record.instance_id, record.model_id)
    entity: dict[str, Any] = {
        "type": body.get("type", "stream"), "name": body.get("name", ""), "description": body.get("description"),
        "status": record.status,
        "runtime_environment": model.runtime_environment if model else None,
        "model_type": model.model_type if model else None,
        "instance_href": deployment_url(base, record),
        "published_model": {"guid": record.model_id, "name": model.name if model else None, "url": murl,
                            "description": model.description if model else None,
                            "created_at": record.created_at},
        "deployed_version": {"guid": version_id(record.model_id),
                             "url": f"{murl}/versions/{version_id(record.model_id)}",
                             "created_at": record.created_at},
        "input": mask(body.get("input")), "output": mask(body.get("output")),
    }
    if record.spark is not None:
        entity["spark_service"] = mask(record.spark)
    if record.status_details:
        entity["status_details"] = record.status_details
        errors = record.status_details.get("failure", {}).get("errors", [])
        if errors:
            entity["status_message"] = errors[0].get("message")
    return {"metadata": {"guid": record.id, "url": deployment_url(base, record), "created_at": record.created_at,
                         "modified_at": record.modified_at},
            "entity": {k: v for k, v in entity.items() if v is not None}}


def render_instance(base: str, instance_id: str, created_at: str, plan: str, deployments: int,
                    limit: int, models: int) -> dict[str, Any]:
    url = instance_url(base, instance_id)
    return {
        "metadata": {"guid": instance_id, "url": url, "created_at": created_at, "modified_at": created_at},
        "entity": {
            "status": "Active", "plan_id": plan, "plan": plan, "region": "local",
            "published_models": {"url": f"{url}/published_models"},
            "deployments": {"url": f"{url}/deployments"},
            "usage": {"deployment_count": {"current": deployments, "limit": limit},
                      "model_count": {"current": models}},
        },
    }
