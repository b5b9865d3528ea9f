"""The instance and its published models (the built-in models are present in every instance)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from wml_server.api.deps import BaseURL, Caller, State
from wml_server.api.paging import MAX_START, page
from wml_server.views import render_instance, render_model

router = APIRouter(tags=["instances"])


@router.get("/v3/wml_instances/{instance_id}", summary="Get the instance")
def get_instance(instance_id: str, app: State, base: BaseURL, who: Caller) -> dict[str, Any]:
    created = app.db.instance_created_at(instance_id) or ""
    return render_instance(base, instance_id, created, app.settings.plan, app.db.count_deployments(instance_id),
                           app.settings.deployment_limit, len(app.service.models.all()))


@router.get("/v3/wml_instances/{instance_id}/published_models", summary="List published models")
def list_models(instance_id: str, app: State, base: BaseURL, who: Caller,
                limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
                start: Annotated[int, Query(ge=0, le=MAX_START)] = 0) -> dict[str, Any]:
    models = app.service.models.all()
    created = app.db.instance_created_at(instance_id) or ""
    resources = [render_model(base, instance_id, m, created,
                              len(app.db.deployments(instance_id, model_id=m.id))) for m in models]
    return page(resources[start:start + limit], len(resources), start, limit,
                f"{base}/v3/wml_instances/{instance_id}/published_models")


@router.get("/v3/wml_instances/{instance_id}/published_models/{model_id}", summary="Get a published model")
def get_model(instance_id: str, model_id: str, app: State, base: BaseURL, who: Caller) -> dict[str, Any]:
    model = app.service.model(model_id)
    return render_model(base, instance_id, model, app.db.instance_created_at(instance_id) or "",
                        len(app.db.deployments(instance_id, model_id=model.id)))
