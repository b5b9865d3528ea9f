"""The FastAPI application: wiring of settings, database, tokens, models and the stream engine."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from wml_server import errors
from wml_server.api import deployments, identity, instances, repository
from wml_server.api.deps import AppState, caller_before_body
from wml_server.atrest import check_key, secure, signing_key
from wml_server.audit import AuditLog
from wml_server.auth import TokenIssuer, load_or_create_signing_key
from wml_server.db import Database
from wml_server.logins import LoginMetrics
from wml_server.models.catalog import ModelCatalog
from wml_server.models.published import WorkerOptions
from wml_server.models.registry import ModelRegistry, default_registry
from wml_server.ratelimit import RateLimiter
from wml_server.repository.service import RepositoryRules, RepositoryService
from wml_server.repository.store import ModelStore
from wml_server.repository.validate import load_check
from wml_server.service import DeploymentService
from wml_server.settings import Settings
from wml_server.spark.supervisor import SparkOptions
from wml_server.streams import StreamController
from wml_server.vault import GENERATE_HINT, KEY_FILE_SETTING, KeyFileError, Vault

log = logging.getLogger("wml_server")
MAX_BODY_BYTES = 1024 * 1024


def create_app(settings: Settings, *, models: ModelRegistry | None = None) -> FastAPI:
    metrics = CollectorRegistry()
    db = open_database(settings)
    store = ModelStore(db, settings.models_dir)
    options = WorkerOptions(require_sandbox=settings.model_sandbox,
                            memory_limit_bytes=settings.model_memory_limit_mb << 20,
                            load_timeout=settings.model_load_timeout,
                            predict_timeout=settings.model_predict_timeout)
    catalog = ModelCatalog(models or default_registry(), store, options)
    streams = StreamController(db, catalog, metrics, run_streams=settings.run_streams,
                               unreachable_timeout=settings.kafka_unreachable_timeout,
                               scoring_workers=settings.scoring_workers, spark_masters=settings.spark_master_list,
                               spark_dir=settings.data_dir / "spark",
                               spark_options=SparkOptions(jars=settings.spark_jar_list,
                                                          executor_memory=settings.spark_executor_memory,
                                                          cores_max=settings.spark_cores_per_stream,
                                                          java_options=settings.spark_java_options,
                                                          trigger_seconds=settings.spark_trigger_seconds))
    service = DeploymentService(db, catalog, streams, limit=settings.deployment_limit, plan=settings.plan,
                                allow_pickled=settings.pickled_models)
    repository_service = RepositoryService(
        db, store, RepositoryRules(allow_pickled=settings.pickled_models, max_content_bytes=settings.model_max_bytes),
        load_check(options))
    # A signing key file named by the operator of the service (a mounted Secret) is theirs and used as it is;
    # the key the service makes itself is stored encrypted beside the credentials.
    key = load_or_create_signing_key(settings.signing_key_file) if settings.signing_key_file else signing_key(db)
    issuer = TokenIssuer(db, key, settings.token_ttl_seconds)
    audit = AuditLog(settings.audit_target)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resumed = service.resume_all()
        streams.finish_cleanups()
        log.info("WML service ready: %d deployment(s) resumed, streams %s", resumed,
                 "on" if settings.run_streams else "off (accept-only)")
        try:
            yield
        finally:
            streams.shutdown()
            db.close()
            audit.close()

    app = FastAPI(title="WML v3 stream deployments (self-hosted)", version="0.1.0", lifespan=lifespan,
                  description="A service speaking the Watson Machine Learning v3 REST API for stream "
                              "deployments, running them on Kafka. Credentials are masked in responses.")
    app.state.wml = AppState(settings=settings, db=db, issuer=issuer, service=service, repository=repository_service,
                             audit=audit, logins=LoginMetrics(metrics),
                             limiter=RateLimiter(settings.rate_limit) if settings.rate_limit > 0 else None,
                             token_limiter=RateLimiter(settings.token_rate_limit, what="token requests")
                             if settings.token_rate_limit > 0 else None)
    errors.install(app, before_invalid=caller_before_body)

    # Model contents stream to disk within a limit of their own (WML_SERVER_MODEL_MAX_BYTES).
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, exempt=is_content_upload)
    if settings.trusted_proxies:
        # Only here: uvicorn runs with proxy_headers off, or it would believe any client on loopback.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)

    app.include_router(identity.router)
    app.include_router(instances.router)
    app.include_router(deployments.router)
    app.include_router(repository.router)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def open_database(settings: Settings) -> Database:
    """The database with its credentials readable: raises KeyFileError (before writing anything) when the key
    is missing or does not open it; migrates a database from before encryption."""
    if settings.key_file is None:
        raise KeyFileError(f"no key to encrypt stored credentials: set {KEY_FILE_SETTING}; make a key file with "
                           f"`{GENERATE_HINT}` and keep it outside the data folder {settings.data_dir}")
    vault = Vault(settings.key_file)
    if settings.key_file.resolve().is_relative_to(settings.data_dir.resolve()):
        log.warning("the key file %s is inside the data folder: a copy of the folder would hand out the key "
                    "with the credentials it encrypts", settings.key_file)
    check_key(settings.database, vault)
    db = Database(settings.database, vault)
    try:
        secure(db)
    except BaseException:
        db.close()
        raise
    return db


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413: by Content-Length before reading anything, and
    while reading when there is none (chunked), so no body is ever held whole in memory past the limit."""

    def __init__(self, app: ASGIApp, limit: int, exempt: Callable[[Scope], bool] = lambda scope: False) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        message = f"Request bodies are limited to {self.limit} bytes."
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await errors.error_response(413, "request_too_large", message)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.limit:
                    # Raised inside the route, so the exception handlers answer in the documented shape.
                    raise StarletteHTTPException(413, message)
            return event

        await self.app(scope, counted, send)


def is_content_upload(scope: Scope) -> bool:
    """PUT /v3/ml_assets/models/{mid}/versions/{vid}/content."""
    parts = str(scope.get("path", "")).split("/")
    return scope.get("method") == "PUT" and len(parts) == 8 and parts[1:4] == ["v3", "ml_assets", "models"] \
        and parts[5] == "versions" and parts[7] == "content"
