"""The repository API (`/v3/ml_assets/models`): publish a model, its versions and their content.

Not instance-scoped in the path: a model belongs to the instance of the caller's token.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse

from wml_api.paths import fill
from wml_api.repository import (
    ML_ASSETS_MODEL,
    ML_ASSETS_MODEL_CONTENT,
    ML_ASSETS_MODELS,
    ML_ASSETS_VERSION,
    ML_ASSETS_VERSION_CONTENT,
    ML_ASSETS_VERSIONS,
    ModelAsset,
    ModelAssetCreate,
    ModelAssetList,
    ModelVersion,
    ModelVersionList,
)
from wml_server.api.deps import ERRORS, Audit, BaseURL, State, principal
from wml_server.api.paging import MAX_START, page
from wml_server.auth import Principal
from wml_server.errors import APIError
from wml_server.repository.views import asset_url, render_asset, render_version

router = APIRouter(tags=["repository"], responses=ERRORS)
Who = Annotated[Principal, Depends(principal)]
_CONTENT_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "application/gzip": {"schema": {"type": "string", "format": "binary"}}}}}


@router.post(ML_ASSETS_MODELS, status_code=201, response_model=ModelAsset, response_model_exclude_none=True,
             summary="Create a model (its content comes with a version)")
def create_model(body: ModelAssetCreate, app: State, base: BaseURL, who: Who, audit: Audit,
                 response: Response) -> ModelAsset:
    record = app.repository.create(who.instance_id, body)
    audit.record("model.created", who, model_id=record.id)
    response.headers["Location"] = asset_url(base, record.id)
    return render_asset(base, record, app.repository.store.first_pending(record.id))


@router.get(ML_ASSETS_MODELS, response_model=ModelAssetList, response_model_exclude_none=True,
            summary="List the instance's models")
def list_models(app: State, base: BaseURL, who: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
                start: Annotated[int, Query(ge=0, le=MAX_START)] = 0) -> ModelAssetList:
    records = app.repository.store.models(who.instance_id)
    resources = [render_asset(base, r) for r in records[start:start + limit]]
    return page(ModelAssetList, resources, len(records), start, limit, base + ML_ASSETS_MODELS)


@router.get(ML_ASSETS_MODEL, response_model=ModelAsset, response_model_exclude_none=True, summary="Get a model")
def get_model(model_id: str, app: State, base: BaseURL, who: Who) -> ModelAsset:
    record = app.repository.model(who.instance_id, model_id)
    # The v3 client's `repository.load` downloads `entity.model_version.content_url`: the latest version with
    # content once there is one, else the version waiting for its upload.
    return render_asset(base, record, record.latest or app.repository.store.first_pending(record.id))


@router.delete(ML_ASSETS_MODEL, status_code=204, summary="Delete a model, its versions and their content")
def delete_model(model_id: str, app: State, who: Who, audit: Audit) -> Response:
    app.repository.delete(who.instance_id, model_id)
    audit.record("model.deleted", who, model_id=model_id)
    return Response(status_code=204)


def _new_version(model_id: str, app: State, base: BaseURL, who: Principal, response: Response) -> ModelVersion:
    version = app.repository.add_version(who.instance_id, model_id)
    rendered = render_version(base, version)
    response.headers["Location"] = rendered.metadata.url or ""
    return rendered


@router.post(ML_ASSETS_MODEL, status_code=201, response_model=ModelAsset, response_model_exclude_none=True,
             summary="Create a version, the v3 client's way: answers the model with `entity.model_version`")
def create_version_of_model(model_id: str, app: State, base: BaseURL, who: Who, response: Response) -> ModelAsset:
    version = app.repository.add_version(who.instance_id, model_id)
    response.headers["Location"] = render_version(base, version).metadata.url or ""
    return render_asset(base, app.repository.model(who.instance_id, model_id), version)


@router.post(ML_ASSETS_VERSIONS, status_code=201, response_model=ModelVersion, response_model_exclude_none=True,
             summary="Create a version (upload its content next)")
def create_version(model_id: str, app: State, base: BaseURL, who: Who, response: Response) -> ModelVersion:
    return _new_version(model_id, app, base, who, response)


@router.get(ML_ASSETS_VERSIONS, response_model=ModelVersionList, response_model_exclude_none=True,
            summary="List a model's versions")
def list_versions(model_id: str, app: State, base: BaseURL, who: Who) -> ModelVersionList:
    app.repository.model(who.instance_id, model_id)
    versions = app.repository.store.versions(model_id)
    url = base + fill(ML_ASSETS_VERSIONS, model_id=model_id)
    return page(ModelVersionList, [render_version(base, v) for v in versions], len(versions), 0, max(1, len(versions)),
                url)


@router.get(ML_ASSETS_VERSION, response_model=ModelVersion, response_model_exclude_none=True,
            summary="Get a version")
def get_version(model_id: str, version_id: str, app: State, base: BaseURL, who: Who,
                size: Annotated[bool, Query(description="also answer `contentSize` (the v3 client's load)")] = False,
                ) -> ModelVersion:
    version = render_version(base, app.repository.version(who.instance_id, model_id, version_id))
    if size:
        version = ModelVersion.model_validate({**version.model_dump(mode="json", exclude_none=True),
                                               "contentSize": version.entity.content_size or 0})
    return version


@router.delete(ML_ASSETS_VERSION, status_code=204,
               summary="Delete a version still waiting for its content (extension: a refused upload's version)")
def delete_version(model_id: str, version_id: str, app: State, who: Who, audit: Audit) -> Response:
    app.repository.delete_pending_version(who.instance_id, model_id, version_id)
    audit.record("model.version.deleted", who, model_id=model_id, version_id=version_id)
    return Response(status_code=204)


@router.put(ML_ASSETS_VERSION_CONTENT, response_model=ModelVersion, response_model_exclude_none=True,
            summary="Upload a version's content (streamed; checked before it is stored)", openapi_extra=_CONTENT_BODY)
async def upload_content(model_id: str, version_id: str, request: Request, app: State, base: BaseURL, who: Who,
                         audit: Audit, content_length: Annotated[int | None, Header(include_in_schema=False)] = None
                         ) -> ModelVersion:
    version = await app.repository.upload(who.instance_id, model_id, version_id, request.stream(), content_length)
    # Content checked and stored: from now on the version can be deployed.
    audit.record("model.published", who, model_id=model_id, version_id=version.id)
    return render_version(base, version)


def _content(app: State, who: Principal, model_id: str, version_id: str | None) -> FileResponse:
    record = app.repository.model(who.instance_id, model_id)
    version = app.repository.version(who.instance_id, model_id, version_id) if version_id else record.latest
    if version is None or version.format is None:
        raise APIError(404, "not_found", f"Model {model_id} has no content yet.")
    return FileResponse(app.repository.store.content_path(model_id, version.id),
                        media_type="application/octet-stream")


@router.get(ML_ASSETS_VERSION_CONTENT, summary="Download a version's content", response_class=FileResponse)
def get_version_content(model_id: str, version_id: str, app: State, who: Who) -> FileResponse:
    return _content(app, who, model_id, version_id)


@router.get(ML_ASSETS_MODEL_CONTENT, summary="Download the latest version's content", response_class=FileResponse)
def get_model_content(model_id: str, app: State, who: Who) -> FileResponse:
    return _content(app, who, model_id, None)
