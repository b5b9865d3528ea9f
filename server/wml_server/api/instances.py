"""The instance and its published models (the built-in models are present in every instance)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from wml_api.models import PublishedModel, PublishedModelList, WMLInstance
from wml_api.paths import INSTANCE, MODEL, MODELS, fill
from wml_server.api.deps import ERRORS, BaseURL, Caller, State
from wml_server.api.paging import MAX_START, page
from wml_server.views import render_instance, render_model

router = APIRouter(tags=["instances"], responses=ERRORS)


@router.get(INSTANCE, response_model_exclude_none=True, summary="Get the instance")
def get_instance(instance_id: str, app: State, base: BaseURL, who: Caller) -> WMLInstance:
    created = app.db.instance_created_at(instance_id) or ""
    return render_instance(base, instance_id, created, app.settings.plan, app.db.count_deployments(instance_id),
                           app.settings.deployment_limit, len(app.service.models.all()))


@router.get(MODELS, response_model_exclude_none=True, summary="List published models")
def list_models(instance_id: str, app: State, base: BaseURL, who: Caller,
                limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
                start: Annotated[int, Query(ge=0, le=MAX_START)] = 0) -> PublishedModelList:
    models = app.service.models.all()
    created = app.db.instance_created_at(instance_id) or ""
    resources = [render_model(base, instance_id, m, created,
                              len(app.db.deployments(instance_id, model_id=m.id))) for m in models]
    return page(PublishedModelList, resources[start:start + limit], len(resources), start, limit,
                base + fill(MODELS, instance_id=instance_id))


@router.get(MODEL, response_model_exclude_none=True, summary="Get a published model")
def get_model(instance_id: str, model_id: str, app: State, base: BaseURL, who: Caller) -> PublishedModel:
    model = app.service.model(model_id)
    return render_model(base, instance_id, model, app.db.instance_created_at(instance_id) or "",
                        len(app.db.deployments(instance_id, model_id=model.id)))
