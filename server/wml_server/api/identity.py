"""Tokens: GET with basic auth (v3, and v2 as the 2017 page used), PUT to refresh."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Depends, Header

from wml_api.models import TokenRefreshRequest, TokenResponse
from wml_api.paths import IDENTITY_V2, IDENTITY_V3
from wml_server.api.deps import ERRORS, State, limited_by_address
from wml_server.errors import APIError

router = APIRouter(tags=["identity"], dependencies=[Depends(limited_by_address)], responses=ERRORS)
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="wml"'}


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


def _token(app: State, authorization: str | None) -> TokenResponse:
    username, password = _basic(authorization)
    return TokenResponse(token=app.issuer.issue(app.issuer.authenticate(username, password)))


@router.get(IDENTITY_V3, response_model=TokenResponse, summary="Get a token (basic auth)")
def get_token_v3(app: State,
                 authorization: Annotated[str | None, Header()] = None) -> TokenResponse:
    return _token(app, authorization)


@router.get(IDENTITY_V2, response_model=TokenResponse, summary="Get a token (basic auth, v2 path)")
def get_token_v2(app: State,
                 authorization: Annotated[str | None, Header()] = None) -> TokenResponse:
    return _token(app, authorization)


@router.put(IDENTITY_V3, response_model=TokenResponse, summary="Refresh a token")
def refresh_token(app: State, body: TokenRefreshRequest) -> TokenResponse:
    return TokenResponse(token=app.issuer.refresh(body.token))
