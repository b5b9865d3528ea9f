"""Deployments, under the model path (create, list, get, patch, delete) and the instance path."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response

from wml_api.models import SPARK_HEADER
from wml_server.api.deps import BaseURL, Caller, State
from wml_server.api.paging import MAX_START, page
from wml_server.views import deployment_url, render_deployment

router = APIRouter(tags=["deployments"])
_MODEL = "/v3/wml_instances/{instance_id}/published_models/{model_id}/deployments"
_INSTANCE = "/v3/wml_instances/{instance_id}/deployments"
SparkHeader = Annotated[str | None, Header(alias=SPARK_HEADER,
                                           description="base64 of the Spark service instance JSON")]
_PATCH_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "array", "items": {"type": "object", "properties": {
        "op": {"type": "string", "enum": ["replace"]}, "path": {"type": "string", "enum": ["/status"]},
        "value": {"type": "string", "enum": ["RUNNING", "STOPPED"]}}, "required": ["op", "path", "value"]}}}}}}


def _render(app: State, base: str, record: Any) -> dict[str, Any]:
    return render_deployment(base, record, app.service.models.get(record.model_id))


@router.post(_MODEL, status_code=201, summary="Create a stream deployment")
def create_deployment(instance_id: str, model_id: str, app: State, base: BaseURL, who: Caller,
                      response: Response, body: Annotated[dict[str, Any], Body()],
                      spark: SparkHeader = None) -> dict[str, Any]:
    record = app.service.create(instance_id, model_id, body, spark)
    response.headers["Location"] = deployment_url(base, record)
    return _render(app, base, record)


@router.get(_MODEL, summary="List a model's deployments")
def list_model_deployments(instance_id: str, model_id: str, app: State, base: BaseURL, who: Caller,
                           status: str | None = None, type: str | None = None) -> dict[str, Any]:
    app.service.model(model_id)
    records = app.db.deployments(instance_id, model_id=model_id, status=status)
    resources = [_render(app, base, r) for r in records if type is None or r.body.get("type", "stream") == type]
    return {"count": len(resources), "resources": resources}


@router.get(_MODEL + "/{deployment_id}", summary="Get a deployment")
def get_model_deployment(instance_id: str, model_id: str, deployment_id: str, app: State, base: BaseURL,
                         who: Caller) -> dict[str, Any]:
    return _render(app, base, app.service.deployment_of_model(instance_id, model_id, deployment_id))


@router.patch(_MODEL + "/{deployment_id}", status_code=204, summary="Start or stop a stream",
              openapi_extra=_PATCH_SCHEMA)
def patch_deployment(instance_id: str, model_id: str, deployment_id: str, app: State, who: Caller,
                     body: Annotated[Any, Body()] = None, spark: SparkHeader = None) -> Response:
    app.service.patch(instance_id, model_id, deployment_id, body, spark)
    return Response(status_code=204)


@router.delete(_MODEL + "/{deployment_id}", status_code=204, summary="Delete a deployment")
def delete_model_deployment(instance_id: str, model_id: str, deployment_id: str, app: State,
                            who: Caller) -> Response:
    app.service.delete(instance_id, deployment_id, model_id)
    return Response(status_code=204)


@router.get(_INSTANCE, summary="List every deployment of the instance")
def list_instance_deployments(instance_id: str, app: State, base: BaseURL, who: Caller,
                              limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
                              start: Annotated[int, Query(ge=0, le=MAX_START)] = 0,
                              status: str | None = None) -> dict[str, Any]:
    records = app.db.deployments(instance_id, status=status, start=start, limit=limit)
    total = app.db.count_deployments(instance_id) if status is None else \
        len(app.db.deployments(instance_id, status=status))
    return page([_render(app, base, r) for r in records], total, start, limit,
                f"{base}/v3/wml_instances/{instance_id}/deployments")


@router.get(_INSTANCE + "/{deployment_id}", summary="Get a deployment by its instance path")
def get_instance_deployment(instance_id: str, deployment_id: str, app: State, base: BaseURL,
                            who: Caller) -> dict[str, Any]:
    return _render(app, base, app.service.deployment(instance_id, deployment_id))


@router.delete(_INSTANCE + "/{deployment_id}", status_code=204, summary="Delete a deployment by its instance path")
def delete_instance_deployment(instance_id: str, deployment_id: str, app: State, who: Caller) -> Response:
    app.service.delete(instance_id, deployment_id)
    return Response(status_code=204)
