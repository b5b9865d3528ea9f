"""The instance and its published models (the built-in models are present in every instance)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from wml_api.models import PublishedModel, PublishedModelList, WMLInstance
from wml_api.paths import INSTANCE, MODEL, MODELS, fill
from wml_server.api.deps import ERRORS, AppState, BaseURL, Caller, State
from wml_server.api.paging import MAX_START, page
from wml_server.errors import APIError
from wml_server.repository.views import render_published
from wml_server.views import render_instance, render_model

router = APIRouter(tags=["instances"], responses=ERRORS)


@router.get(INSTANCE, response_model_exclude_none=True, summary="Get the instance")
def get_instance(instance_id: str, app: State, base: BaseURL, who: Caller) -> WMLInstance:
    created = app.db.instance_created_at(instance_id) or ""
    models = len(app.service.models.builtins.ids()) + len(app.repository.store.models(instance_id, with_content=True))
    return render_instance(base, instance_id, created, app.settings.plan, app.db.count_deployments(instance_id),
                           app.settings.deployment_limit, models)


@router.get(MODELS, response_model_exclude_none=True, summary="List published models")
def list_models(instance_id: str, app: State, base: BaseURL, who: Caller,
                limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
                start: Annotated[int, Query(ge=0, le=MAX_START)] = 0) -> PublishedModelList:
    created = app.db.instance_created_at(instance_id) or ""
    # The built-in models first, then the instance's own in the order they were published (with content only).
    resources = [render_model(base, instance_id, m, created, _deployments(app, instance_id, m.id))
                 for m in app.service.models.builtins.all()]
    resources += [render_published(base, r, _deployments(app, instance_id, r.id))
                  for r in app.repository.store.models(instance_id, with_content=True)]
    return page(PublishedModelList, resources[start:start + limit], len(resources), start, limit,
                base + fill(MODELS, instance_id=instance_id))


@router.get(MODEL, response_model_exclude_none=True, summary="Get a published model")
def get_model(instance_id: str, model_id: str, app: State, base: BaseURL, who: Caller) -> PublishedModel:
    builtin = app.service.models.builtins.get(model_id)
    if builtin is not None:
        return render_model(base, instance_id, builtin, app.db.instance_created_at(instance_id) or "",
                            _deployments(app, instance_id, model_id))
    record = app.repository.store.model(instance_id, model_id)
    if record is None or record.latest is None:
        raise APIError(404, "not_found", f"Published model {model_id} does not exist.")
    return render_published(base, record, _deployments(app, instance_id, model_id))


def _deployments(app: AppState, instance_id: str, model_id: str) -> int:
    return len(app.db.deployments(instance_id, model_id=model_id))
