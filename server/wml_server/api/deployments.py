"""Deployments, under the model path (create, list, get, patch, delete) and the instance path."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from fastapi.responses import JSONResponse

from wml_api.models import (
    SPARK_HEADER,
    Deployment,
    DeploymentCreate,
    DeploymentList,
    DryRunReport,
    ErrorBody,
    PatchOperation,
)
from wml_api.paths import INSTANCE_DEPLOYMENT, INSTANCE_DEPLOYMENTS, MODEL_DEPLOYMENT, MODEL_DEPLOYMENTS, fill
from wml_server.api.deps import ERRORS, Audit, BaseURL, Caller, State
from wml_server.api.paging import MAX_START, page
from wml_server.db import DeploymentRecord
from wml_server.views import deployment_url, render_deployment

router = APIRouter(tags=["deployments"], responses=ERRORS)
SparkHeader = Annotated[str | None, Header(alias=SPARK_HEADER,
                                           description="base64 of the Spark service instance JSON")]
# Documented as the contract's list of PatchOperation, but read as any JSON: the reference gives each wrong
# shape its own 400 code (patch_multiple_ops, wrong_stream_patch_path, ...), which FastAPI's validation of a
# typed body would turn into one generic invalid_request. DeploymentService.patch checks it in that order.
_PATCH_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "array", "minItems": 1, "maxItems": 1, "items": PatchOperation.model_json_schema()}}}}}


def _render(app: State, base: str, record: DeploymentRecord) -> Deployment:
    model = app.service.models.get(record.instance_id, record.model_id, record.model_version)
    return render_deployment(base, record, model, app.service.streams.live(record.id))


DryRun = Annotated[bool, Query(description="Extension `dry_run`: run every check of the create (and, when the "
                                           "service runs streams, both Kafka connections and topics), create "
                                           "nothing, answer 200 with what was checked")]
_DRY_RUN_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": DryRunReport, "description": "dry_run=true: every check passed; nothing was created"},
    503: {"model": ErrorBody, "description": "dry_run=true: the Kafka brokers did not answer in time "
                                             "(kafka_unreachable, Retry-After)"},
}


@router.post(MODEL_DEPLOYMENTS, status_code=201, response_model=Deployment, response_model_exclude_none=True,
             summary="Create a stream deployment (or, with dry_run=true, check one)", responses=_DRY_RUN_ANSWERS)
def create_deployment(instance_id: str, model_id: str, app: State, base: BaseURL, who: Caller, audit: Audit,
                      response: Response, body: DeploymentCreate, spark: SparkHeader = None,
                      dry_run: DryRun = False) -> Deployment | JSONResponse:
    if dry_run:
        checked = app.service.check(instance_id, model_id, body, spark)
        return JSONResponse(DryRunReport(checked=checked).model_dump(mode="json"), status_code=200)
    record = app.service.create(instance_id, model_id, body, spark)
    audit.record("deployment.created", who, deployment_id=record.id, model_id=model_id, state=record.desired)
    response.headers["Location"] = deployment_url(base, record)
    return _render(app, base, record)


@router.get(MODEL_DEPLOYMENTS, response_model_exclude_none=True, summary="List a model's deployments")
def list_model_deployments(instance_id: str, model_id: str, app: State, base: BaseURL, who: Caller,
                           status: str | None = None, type: str | None = None) -> DeploymentList:
    app.service.model(instance_id, model_id)
    records = app.db.deployments(instance_id, model_id=model_id, status=status)
    resources = [_render(app, base, r) for r in records if type is None or r.body.get("type", "stream") == type]
    return DeploymentList(count=len(resources), resources=resources)


@router.get(MODEL_DEPLOYMENT, response_model_exclude_none=True, summary="Get a deployment")
def get_model_deployment(instance_id: str, model_id: str, deployment_id: str, app: State, base: BaseURL,
                         who: Caller) -> Deployment:
    return _render(app, base, app.service.deployment_of_model(instance_id, model_id, deployment_id))


@router.patch(MODEL_DEPLOYMENT, status_code=204, response_class=Response, summary="Start or stop a stream",
              openapi_extra=_PATCH_BODY)
def patch_deployment(instance_id: str, model_id: str, deployment_id: str, app: State, who: Caller, audit: Audit,
                     body: Annotated[Any, Body()] = None, spark: SparkHeader = None) -> None:
    app.service.patch(instance_id, model_id, deployment_id, body, spark)
    # The patch passed the service's checks: its value is RUNNING or STOPPED, nothing else of the body is kept.
    audit.record("deployment.patched", who, deployment_id=deployment_id, model_id=model_id,
                 state=str(body[0]["value"]))


@router.delete(MODEL_DEPLOYMENT, status_code=204, response_class=Response, summary="Delete a deployment")
def delete_model_deployment(instance_id: str, model_id: str, deployment_id: str, app: State,
                            who: Caller, audit: Audit) -> None:
    app.service.delete(instance_id, deployment_id, model_id)
    audit.record("deployment.deleted", who, deployment_id=deployment_id, model_id=model_id)


@router.get(INSTANCE_DEPLOYMENTS, response_model_exclude_none=True, summary="List every deployment of the instance")
def list_instance_deployments(instance_id: str, app: State, base: BaseURL, who: Caller,
                              limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
                              start: Annotated[int, Query(ge=0, le=MAX_START)] = 0,
                              status: str | None = None) -> DeploymentList:
    records = app.db.deployments(instance_id, status=status, start=start, limit=limit)
    total = app.db.count_deployments(instance_id) if status is None else \
        len(app.db.deployments(instance_id, status=status))
    return page(DeploymentList, [_render(app, base, r) for r in records], total, start, limit,
                base + fill(INSTANCE_DEPLOYMENTS, instance_id=instance_id))


@router.get(INSTANCE_DEPLOYMENT, response_model_exclude_none=True, summary="Get a deployment by its instance path")
def get_instance_deployment(instance_id: str, deployment_id: str, app: State, base: BaseURL,
                            who: Caller) -> Deployment:
    return _render(app, base, app.service.deployment(instance_id, deployment_id))


@router.delete(INSTANCE_DEPLOYMENT, status_code=204, response_class=Response,
               summary="Delete a deployment by its instance path")
def delete_instance_deployment(instance_id: str, deployment_id: str, app: State, who: Caller,
                               audit: Audit) -> None:
    app.service.delete(instance_id, deployment_id)
    audit.record("deployment.deleted", who, deployment_id=deployment_id)
