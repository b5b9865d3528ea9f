"""What every route needs: the service's state, the caller, and the caller's right to an instance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.dependencies.models import Dependant

from wml_api.models import ErrorBody
from wml_server.audit import AuditLog
from wml_server.auth import Principal, TokenIssuer
from wml_server.db import Database
from wml_server.errors import APIError
from wml_server.logins import LoginMetrics
from wml_server.ratelimit import RateLimiter
from wml_server.repository.service import RepositoryService
from wml_server.service import DeploymentService
from wml_server.settings import Settings

# Every error has the contract's shape. Documented as ranges: FastAPI's own 422 entry, which this service
# never sends (an invalid request is a 400), is left out when a 4XX entry is present.
ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "Refused: 400 invalid input, 401 token, 403 another instance's, "
                                               "404 unknown, 413 too large, 429 rate limit (Retry-After)"},
    "5XX": {"model": ErrorBody, "description": "Internal error; the trace is in the service's log"},
}


@dataclass
class AppState:
    settings: Settings
    db: Database
    issuer: TokenIssuer
    service: DeploymentService
    repository: RepositoryService
    audit: AuditLog  # WML_SERVER_AUDIT_LOG
    logins: LoginMetrics
    limiter: RateLimiter | None = None  # WML_SERVER_RATE_LIMIT
    token_limiter: RateLimiter | None = None  # WML_SERVER_TOKEN_RATE_LIMIT


def state(request: Request) -> AppState:
    app_state: AppState = request.app.state.wml
    return app_state


def base_url(request: Request) -> str:
    configured = state(request).settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


def principal(request: Request,
              authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> Principal:
    if not authorization:
        raise APIError(401, "missing_authorization_token", "The request has no `Authorization: Bearer` token.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(401, "invalid_token_format", "The `Authorization` header must be `Bearer <token>`.")
    who = state(request).issuer.verify(token.strip())
    if (limiter := state(request).limiter) is not None:
        limiter.check(f"user {who.username}")
    return who


def client_address(request: Request) -> str:
    """The TCP peer's address: behind a reverse proxy that is the proxy's, unless the service was told to believe
    the proxy's X-Forwarded-For (WML_SERVER_TRUSTED_PROXIES)."""
    return request.client.host if request.client else "?"


def limited_by_address(request: Request) -> None:
    """Token requests, which have no token to count by, count by the client's address. Runs before the route, so
    a refused guess costs no scrypt hash (16 MiB and tens of milliseconds each) and learns nothing."""
    app = state(request)
    key = f"address {client_address(request)}"
    try:
        for limiter in (app.token_limiter, app.limiter):
            if limiter is not None:
                limiter.check(key)
    except APIError as exc:
        app.logins.refused(exc.code)
        raise


@dataclass(frozen=True)
class Auditor:
    """The audit trail as a route sees it: the client's address filled in, the caller's user and instance from
    its token. Routes record a change once it is done, so a line means it happened."""

    log: AuditLog
    client: str

    def record(self, event: str, who: Principal, **ids: str | None) -> None:
        self.log.record(event, user=who.username, instance=who.instance_id, client=self.client, outcome="ok",
                        **ids)


def auditor(request: Request) -> Auditor:
    return Auditor(state(request).audit, client_address(request))


def instance_principal(instance_id: str, who: Annotated[Principal, Depends(principal)]) -> Principal:
    """The caller's token must belong to the instance named in the path."""
    if who.instance_id != instance_id:
        raise APIError(403, "instance_access_denied",
                       f"The token does not give access to instance {instance_id}.")
    return who


State = Annotated[AppState, Depends(state)]
BaseURL = Annotated[str, Depends(base_url)]
Caller = Annotated[Principal, Depends(instance_principal)]
Audit = Annotated[Auditor, Depends(auditor)]


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


def caller_before_body(request: Request) -> None:
    """Raises what the route's token check would (401, 403) for a request FastAPI refused before running it:
    it parses a JSON body before any dependency, so a body that is not JSON would otherwise get its 400
    whatever the token. Without the right token, nothing is said about the body."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None or not _depends_on(dependant, principal):
        return
    who = principal(request, request.headers.get("authorization"))
    if _depends_on(dependant, instance_principal):
        instance_principal(str(request.path_params.get("instance_id", "")), who)
