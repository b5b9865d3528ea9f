"""Tokens: GET with basic auth (v3, and v2 as the 2017 page used), PUT to refresh."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from wml_api.models import TokenRefreshRequest, TokenResponse
from wml_api.paths import IDENTITY_V2, IDENTITY_V3
from wml_server.api.deps import ERRORS, Audit, State, limited_by_address
from wml_server.auth import Principal
from wml_server.errors import APIError

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="wml"'}


def _limited(request: Request, audit: Audit,
             authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> None:
    """The rate limit of token requests; a request it refuses is in the audit trail too, with the name it tried:
    a client hammering this endpoint is what the trail is for."""
    try:
        limited_by_address(request)
    except APIError as exc:
        try:
            tried: str | None = _basic(authorization)[0] if request.method == "GET" else None
        except APIError:
            tried = None
        via = "refresh" if request.method == "PUT" else "v2" if request.url.path == IDENTITY_V2 else "v3"
        audit.log.record("token.refused", user=tried, client=audit.client, outcome="refused", reason=exc.code,
                         via=via)
        raise


router = APIRouter(tags=["identity"], dependencies=[Depends(_limited)], responses=ERRORS)


def _basic(authorization: str | None) -> tuple[str, str]:
    if not authorization:
        raise APIError(401, "missing_authorization", "Basic authentication is required.", _CHALLENGE)
    scheme, _, encoded = authorization.partition(" ")
    try:
        if scheme.lower() != "basic":
            raise ValueError
        username, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        if not sep:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise APIError(401, "invalid_authorization", "The `Authorization` header is not valid basic auth.",
                       _CHALLENGE) from None
    return username, password


def _token(app: State, audit: Audit, authorization: str | None, via: str) -> TokenResponse:
    username: str | None = None
    try:
        username, password = _basic(authorization)
        who = app.issuer.authenticate(username, password)
    except APIError as exc:
        # The name tried, never the password: a run of these from one client is what a brute force looks like.
        audit.log.record("token.refused", user=username, client=audit.client, outcome="refused",
                         reason=exc.code, via=via)
        app.logins.refused(exc.code)  # in /metrics by reason only: no name there (logins.py)
        raise
    return _issued(app, audit, who, app.issuer.issue(who), via)


def _issued(app: State, audit: Audit, who: Principal, token: str, via: str) -> TokenResponse:
    audit.record("token.issued", who, via=via)
    app.logins.issued()
    return TokenResponse(token=token)


@router.get(IDENTITY_V3, response_model=TokenResponse, summary="Get a token (basic auth)")
def get_token_v3(app: State, audit: Audit,
                 authorization: Annotated[str | None, Header()] = None) -> TokenResponse:
    return _token(app, audit, authorization, "v3")


@router.get(IDENTITY_V2, response_model=TokenResponse, summary="Get a token (basic auth, v2 path)")
def get_token_v2(app: State, audit: Audit,
                 authorization: Annotated[str | None, Header()] = None) -> TokenResponse:
    return _token(app, audit, authorization, "v2")


@router.put(IDENTITY_V3, response_model=TokenResponse, summary="Refresh a token")
def refresh_token(app: State, audit: Audit, body: TokenRefreshRequest) -> TokenResponse:
    try:
        who = app.issuer.renewable(body.token)
    except APIError as exc:
        audit.log.record("token.refused", client=audit.client, outcome="refused", reason=exc.code,
                         via="refresh")
        app.logins.refused(exc.code)
        raise
    return _issued(app, audit, who, app.issuer.issue(who), "refresh")
