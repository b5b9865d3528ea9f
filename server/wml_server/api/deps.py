"""What every route needs: the service's state, the caller, and the caller's right to an instance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from wml_server.auth import Principal, TokenIssuer
from wml_server.db import Database
from wml_server.errors import APIError
from wml_server.service import DeploymentService
from wml_server.settings import Settings


@dataclass
class AppState:
    settings: Settings
    db: Database
    issuer: TokenIssuer
    service: DeploymentService


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
    return state(request).issuer.verify(token.strip())


def instance_principal(instance_id: str, who: Annotated[Principal, Depends(principal)]) -> Principal:
    """The caller's token must belong to the instance named in the path."""
    if who.instance_id != instance_id:
        raise APIError(403, "instance_access_denied",
                       f"The token does not give access to instance {instance_id}.")
    return who


State = Annotated[AppState, Depends(state)]
BaseURL = Annotated[str, Depends(base_url)]
Caller = Annotated[Principal, Depends(instance_principal)]
