"""The WML v3 client the operator uses: one `requests.Session`, typed results, `WMLError`s for everything else."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ValidationError

from wml_api.auth import TOKEN_CACHE, TokenCache, TokenManager
from wml_api.credentials import WMLCredentials
from wml_api.errors import HeldBack, InvalidResponse, RateLimited, WMLError, error_from_response
from wml_api.models import (
    SPARK_HEADER,
    Deployment,
    DeploymentCreate,
    DeploymentList,
    DryRunReport,
    PublishedModel,
    PublishedModelList,
    ResourceList,
    SparkServiceInstance,
    WMLInstance,
    describe_validation_error,
    status_patch,
)
from wml_api.paths import (
    INSTANCE,
    INSTANCE_DEPLOYMENT,
    INSTANCE_DEPLOYMENTS,
    MODEL,
    MODEL_DEPLOYMENT,
    MODEL_DEPLOYMENTS,
    MODELS,
    fill,
)
from wml_api.repository import (
    ML_ASSETS_MODEL,
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
from wml_api.transport import OnResponse, Transport

# A server whose `next` links never end would otherwise keep a reconcile busy forever.
MAX_PAGES = 1000

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class WMLClient:
    """Speaks v3 to one WML instance. Thread-safe enough for kopf's handler threads; cheap to create."""

    def __init__(self, base_url: str, credentials: WMLCredentials, instance_id: str, *,
                 ca_bundle: str | None = None, verify: bool = True, connect_timeout: float = 5,
                 read_timeout: float = 30, session: requests.Session | None = None,
                 user_agent: str = "wml-stream-operator", on_response: OnResponse | None = None,
                 token_cache: TokenCache = TOKEN_CACHE) -> None:
        if not instance_id:
            raise ValueError("WML instance id must not be empty")
        self.instance_id = instance_id
        self._transport = Transport(base_url, session=session, verify=ca_bundle if ca_bundle else verify,
                                    connect_timeout=connect_timeout, read_timeout=read_timeout,
                                    user_agent=user_agent, on_response=on_response)
        self._auth = TokenManager(self._transport, credentials, token_cache)
        # After a 429 with Retry-After, no request of this client goes out until then (monotonic seconds):
        # the server asked this client to wait, not only the caller that happened to get the answer.
        self._resume_at = 0.0
        self._resume_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return self._transport.base_url

    def __repr__(self) -> str:
        return f"WMLClient(base_url={self.base_url!r}, instance_id={self.instance_id!r})"

    def close(self) -> None:
        """Closes the session if this client created it; a session passed in belongs to the caller."""
        self._transport.close()

    def __enter__(self) -> WMLClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- instance and models ---------------------------------------------------------------------------

    def get_instance(self) -> WMLInstance:
        return self._get(WMLInstance, INSTANCE)

    def list_published_models(self) -> list[PublishedModel]:
        return self._list(PublishedModelList, MODELS)

    def get_published_model(self, model_id: str) -> PublishedModel:
        return self._get(PublishedModel, MODEL, model_id=model_id)

    # --- deployments under a model ---------------------------------------------------------------------

    def create_deployment(self, model_id: str, body: DeploymentCreate, spark: SparkServiceInstance) -> Deployment:
        template, path = self._path(MODEL_DEPLOYMENTS, model_id=model_id)
        response = self._call("POST", template, path, json=body.model_dump(mode="json", exclude_none=True),
                              headers={SPARK_HEADER: spark.to_header()})
        return self._parse(Deployment, "POST", path, response)

    def check_deployment(self, model_id: str, body: DeploymentCreate, spark: SparkServiceInstance) -> DryRunReport:
        """Extension EXT_DRY_RUN: what a create of `body` would answer, creating nothing. Only for a server that
        lists the extension: another one may create the deployment for real."""
        template, path = self._path(MODEL_DEPLOYMENTS, model_id=model_id)
        response = self._call("POST", template, path, params={"dry_run": "true"},
                              json=body.model_dump(mode="json", exclude_none=True),
                              headers={SPARK_HEADER: spark.to_header()})
        return self._parse(DryRunReport, "POST", path, response)

    def list_deployments(self, model_id: str, *, status: str | None = None,
                         type: str | None = None) -> list[Deployment]:
        query = {k: str(v) for k, v in (("status", status), ("type", type)) if v is not None}
        return self._list(DeploymentList, MODEL_DEPLOYMENTS, query, model_id=model_id)

    def get_deployment(self, model_id: str, deployment_id: str) -> Deployment:
        return self._get(Deployment, MODEL_DEPLOYMENT, model_id=model_id, deployment_id=deployment_id)

    def set_deployment_status(self, model_id: str, deployment_id: str, status: str,
                              spark: SparkServiceInstance | None = None) -> None:
        template, path = self._path(MODEL_DEPLOYMENT, model_id=model_id, deployment_id=deployment_id)
        headers = {SPARK_HEADER: spark.to_header()} if spark is not None else {}
        self._call("PATCH", template, path, json=status_patch(status), headers=headers).close()

    def delete_deployment(self, model_id: str, deployment_id: str) -> None:
        """404 raises NotFound: whether that counts as done is the caller's decision."""
        template, path = self._path(MODEL_DEPLOYMENT, model_id=model_id, deployment_id=deployment_id)
        self._call("DELETE", template, path).close()

    # --- deployments by their instance path ------------------------------------------------------------

    def list_instance_deployments(self, *, status: str | None = None) -> list[Deployment]:
        query = {"status": status} if status is not None else {}
        return self._list(DeploymentList, INSTANCE_DEPLOYMENTS, query)

    def get_instance_deployment(self, deployment_id: str) -> Deployment:
        return self._get(Deployment, INSTANCE_DEPLOYMENT, deployment_id=deployment_id)

    def delete_instance_deployment(self, deployment_id: str) -> None:
        template, path = self._path(INSTANCE_DEPLOYMENT, deployment_id=deployment_id)
        self._call("DELETE", template, path).close()

    # --- the repository (`/v3/ml_assets/models`): publishing a model ------------------------------------

    def publish_model(self, meta: ModelAssetCreate, content: BinaryIO) -> ModelAsset:
        """Creates the model, a version, and uploads `content` (streamed from the file): the model is then
        among the instance's published models. When the upload is refused, the model it created is deleted
        (so nothing is left half-published) and the service's error raised."""
        asset = self._send(ModelAsset, "POST", ML_ASSETS_MODELS, meta.model_dump(mode="json", exclude_none=True))
        try:
            # The version the model was created with waits for the content; a server that made none gets one.
            waiting = asset.entity.model_version
            version_id = waiting.guid if waiting is not None else \
                self._send(ModelVersion, "POST", ML_ASSETS_VERSIONS, {}, model_id=asset.id).id
            self._send(ModelVersion, "PUT", ML_ASSETS_VERSION_CONTENT, None, data=content,
                       headers={"Content-Type": "application/octet-stream"}, model_id=asset.id,
                       version_id=version_id)
        except WMLError:
            with contextlib.suppress(WMLError):
                self.delete_model_asset(asset.id)
            raise
        return self._send(ModelAsset, "GET", ML_ASSETS_MODEL, None, model_id=asset.id)

    def add_model_version(self, model_id: str, content: BinaryIO) -> ModelVersion:
        """A new version of an existing model with `content` (streamed from the file): the model's latest version
        once stored. When the upload is refused, the version it created is deleted (a server without that
        leaves it pending, which no deployment can use) and the service's error raised."""
        version = self._send(ModelVersion, "POST", ML_ASSETS_VERSIONS, {}, model_id=model_id)
        try:
            return self._send(ModelVersion, "PUT", ML_ASSETS_VERSION_CONTENT, None, data=content,
                              headers={"Content-Type": "application/octet-stream"}, model_id=model_id,
                              version_id=version.id)
        except WMLError:
            with contextlib.suppress(WMLError):
                self.delete_model_version(model_id, version.id)
            raise

    def get_model_asset(self, model_id: str) -> ModelAsset:
        return self._get(ModelAsset, ML_ASSETS_MODEL, model_id=model_id)

    def get_model_version(self, model_id: str, version_id: str) -> ModelVersion:
        return self._get(ModelVersion, ML_ASSETS_VERSION, model_id=model_id, version_id=version_id)

    def list_model_versions(self, model_id: str) -> list[ModelVersion]:
        return self._list(ModelVersionList, ML_ASSETS_VERSIONS, model_id=model_id)

    def delete_model_version(self, model_id: str, version_id: str) -> None:
        """Extension: deletes a version still waiting for its content (the service refuses a stored one)."""
        template, path = self._path(ML_ASSETS_VERSION, model_id=model_id, version_id=version_id)
        self._call("DELETE", template, path).close()

    def list_model_assets(self) -> list[ModelAsset]:
        return self._list(ModelAssetList, ML_ASSETS_MODELS)

    def delete_model_asset(self, model_id: str) -> None:
        template, path = self._path(ML_ASSETS_MODEL, model_id=model_id)
        self._call("DELETE", template, path).close()

    def _send(self, model: type[M], method: str, template: str, json: Any, *, data: Any = None,
              headers: Mapping[str, str] | None = None, **ids: str) -> M:
        template, path = self._path(template, **ids)
        return self._parse(model, method, path, self._call(method, template, path, json=json, data=data,
                                                           headers=headers))

    # --- plumbing --------------------------------------------------------------------------------------

    def _path(self, template: str, **ids: str) -> tuple[str, str]:
        if "{instance_id}" not in template:  # the repository's paths: the token says which instance
            return template, fill(template, **ids) if ids else template
        return template, fill(template, instance_id=self.instance_id, **ids)

    def _call(self, method: str, template: str, path: str, *, url: str | None = None,
              params: Mapping[str, str] | None = None, json: Any = None,
              headers: Mapping[str, str] | None = None, data: Any = None) -> requests.Response:
        """One authenticated call; a 401 gets exactly one more try with a freshly obtained token. While a
        Retry-After of an earlier 429 runs, HeldBack (a RateLimited) without sending anything."""
        wait = self._resume_at - time.monotonic()
        if wait > 0:
            raise HeldBack(f"not sent: WML asked to wait (Retry-After), {wait:.1f} s left", method=method,
                           path=path, retry_after=wait)
        try:
            return self._call_now(method, template, path, url=url, params=params, json=json, headers=headers,
                                  data=data)
        except RateLimited as err:
            if err.retry_after:
                with self._resume_lock:
                    self._resume_at = max(self._resume_at, time.monotonic() + err.retry_after)
            raise

    def _call_now(self, method: str, template: str, path: str, *, url: str | None,
                  params: Mapping[str, str] | None, json: Any, headers: Mapping[str, str] | None,
                  data: Any = None) -> requests.Response:
        def send(token: str) -> requests.Response:
            return self._transport.send(method, template, path, url=url, params=params, json=json, data=data,
                                        headers={**(headers or {}), "Authorization": f"Bearer {token}"})

        token = self._auth.token()
        response = send(token)
        if response.status_code == 401:
            response.close()
            if hasattr(data, "seek"):  # a file being uploaded goes again from its start
                data.seek(0)
            self._auth.invalidate(token)
            response = send(self._auth.token())
        if not 200 <= response.status_code < 300:
            raise error_from_response(method, path, response)
        return response

    def _get(self, model: type[M], template: str, **ids: str) -> M:
        template, path = self._path(template, **ids)
        return self._parse(model, "GET", path, self._call("GET", template, path))

    def _list(self, model: type[ResourceList[T]], template: str, query: Mapping[str, str] | None = None,
              **ids: str) -> list[T]:
        template, path = self._path(template, **ids)
        page = self._parse(model, "GET", path, self._call("GET", template, path, params=query or None))
        items = list(page.resources)
        seen: set[str] = set()
        while page.next is not None and page.next.url:
            url = self._resolve(page.next.url, path)
            if url in seen or len(seen) >= MAX_PAGES:
                raise InvalidResponse("list paging does not end (a `next` link repeats)", method="GET", path=path)
            seen.add(url)
            page_path = urlsplit(url).path
            page = self._parse(model, "GET", page_path, self._call("GET", template, page_path, url=url))
            items.extend(page.resources)
        return items

    def _resolve(self, link: str, path: str) -> str:
        """`next.url` may be absolute, rooted ("/v3/...") or relative to the base URL; never another host."""
        base = self._transport.base_url
        parts = urlsplit(link)
        if parts.scheme or parts.netloc:
            if f"{parts.scheme}://{parts.netloc}" != self._transport.origin:
                # Following it would hand our bearer token to whoever that host is.
                raise InvalidResponse("list paging points to another host", method="GET", path=path)
            return link
        prefix = urlsplit(base).path
        if link.startswith("/"):
            return self._transport.origin + (link if not prefix or link.startswith(prefix + "/") else prefix + link)
        return f"{base}/{link}"

    @staticmethod
    def _parse(model: type[M], method: str, path: str, response: requests.Response) -> M:
        status = response.status_code
        try:
            return model.model_validate(response.json())
        except ValidationError as exc:
            reason = describe_validation_error(exc)
        except ValueError:
            reason = "body is not JSON"
        raise InvalidResponse(f"unexpected response body: {reason}", method=method, path=path, status=status)

