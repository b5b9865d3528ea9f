"""Bearer tokens: fetched with basic auth, shared by every client of the same credentials, refreshed before expiry.

The operator builds many clients for one instance (one per resource and pass); a process-wide cache keeps
that to one token request per credentials rather than one per reconcile.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from pydantic import ValidationError

from wml_api.credentials import WMLCredentials
from wml_api.errors import InvalidResponse, WMLError, error_from_response
from wml_api.models import TokenRefreshRequest, TokenResponse, describe_validation_error
from wml_api.paths import IDENTITY_V2, IDENTITY_V3
from wml_api.transport import Transport

log = logging.getLogger("wml_api")

# IBM's client refreshed 30 minutes before exp; short-lived tokens refresh in their last tenth instead.
REFRESH_MARGIN_MAX = 30 * 60.0
REFRESH_MARGIN_FRACTION = 0.1

CacheKey = tuple[str, str, str]


def _now() -> float:
    """Wall-clock seconds, as `exp` is; a function so tests can move time forward."""
    return time.time()


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, read without verifying it: only to learn when to refresh, never to trust."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float | None  # None: an opaque token; only a 401 tells us it is stale
    refresh_at: float | None

    @classmethod
    def parse(cls, value: str, now: float) -> Token:
        claims = jwt_claims(value) or {}
        exp = _number(claims.get("exp"))
        if exp is None:
            return cls(value, None, None)
        issued = _number(claims.get("iat")) or now
        margin = min(REFRESH_MARGIN_MAX, REFRESH_MARGIN_FRACTION * max(0.0, exp - issued))
        return cls(value, exp, exp - margin)

    def needs_refresh(self, now: float) -> bool:
        return self.refresh_at is not None and now >= self.refresh_at

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def __repr__(self) -> str:
        return f"Token(value='********', expires_at={self.expires_at}, refresh_at={self.refresh_at})"


class TokenCache:
    """Thread-safe; one lock per key so a burst of reconciles asks for one token, not one each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[CacheKey, Token] = {}
        self._key_locks: dict[CacheKey, threading.Lock] = {}

    def key_lock(self, key: CacheKey) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def get(self, key: CacheKey) -> Token | None:
        with self._lock:
            return self._tokens.get(key)

    def put(self, key: CacheKey, token: Token) -> None:
        with self._lock:
            self._tokens[key] = token

    def discard(self, key: CacheKey, value: str) -> None:
        """Forget a token the server refused, unless another thread already replaced it."""
        with self._lock:
            current = self._tokens.get(key)
            if current is not None and current.value == value:
                del self._tokens[key]

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


TOKEN_CACHE = TokenCache()


class TokenManager:
    def __init__(self, transport: Transport, credentials: WMLCredentials, cache: TokenCache = TOKEN_CACHE) -> None:
        self._transport = transport
        self._credentials = credentials
        self._cache = cache
        self._key = credentials.cache_key(transport.base_url)

    def token(self) -> str:
        with self._cache.key_lock(self._key):
            cached = self._cache.get(self._key)
            now = _now()
            if cached is not None and not cached.needs_refresh(now):
                return cached.value
            if cached is None:
                fresh = self._fetch()
            else:
                try:
                    fresh = self._refresh(cached.value)
                except WMLError as err:
                    if not err.transient or cached.expired(now):
                        raise
                    # The old token still works: a hiccup of the token endpoint need not fail this call.
                    log.debug("token refresh failed, using the current token until it expires: %s", err)
                    return cached.value
            self._cache.put(self._key, fresh)
            return fresh.value

    def invalidate(self, value: str) -> None:
        self._cache.discard(self._key, value)

    def _fetch(self) -> Token:
        # UTF-8 (RFC 7617): requests would encode str as latin-1 and fail on anything beyond it.
        basic = (self._credentials.username.encode(), self._credentials.password.encode())
        response = self._transport.send("GET", IDENTITY_V3, IDENTITY_V3, basic_auth=basic)
        path = IDENTITY_V3
        if response.status_code == 404:
            # The 2017 page only knew the v2 path; some servers may too.
            response.close()
            path = IDENTITY_V2
            response = self._transport.send("GET", IDENTITY_V2, IDENTITY_V2, basic_auth=basic)
        return self._parse("GET", path, response)

    def _refresh(self, old: str) -> Token:
        response = self._transport.send("PUT", IDENTITY_V3, IDENTITY_V3,
                                        json=TokenRefreshRequest(token=old).model_dump(mode="json"))
        try:
            return self._parse("PUT", IDENTITY_V3, response)
        except WMLError as err:
            # Refused (expired beyond grace, unknown endpoint, ...): the credentials may still be good.
            if err.transient or err.status is None or not 400 <= err.status < 500:
                raise
            log.debug("token refresh refused (%s), authenticating again", err.status)
            return self._fetch()

    def _parse(self, method: str, path: str, response: requests.Response) -> Token:
        if not 200 <= response.status_code < 300:
            raise error_from_response(method, path, response)
        try:
            body = TokenResponse.model_validate(response.json())
        except ValueError as exc:
            reason = describe_validation_error(exc) if isinstance(exc, ValidationError) else "body is not JSON"
            raise InvalidResponse(f"unexpected token response: {reason}", method=method, path=path,
                                  status=response.status_code) from None
        return Token.parse(body.token, _now())
