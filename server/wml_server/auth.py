"""Credentials and tokens: scrypt-hashed passwords, HS256 JWTs bound to one instance."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from wml_server.db import Database
from wml_server.errors import APIError
from wml_server.token_payload import encode_hs256

ISSUER = "wml-stream-operator/wml-server"
# A refresh accepts a token that expired at most this long ago (the original refreshed "possibly expired" ones).
REFRESH_GRACE_SECONDS = 7 * 24 * 3600
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt${n}${r}${p}${salt}${digest}".format(
        **_SCRYPT, salt=base64.b64encode(salt).decode(), digest=base64.b64encode(digest).decode())


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), dklen=32,
                                  n=int(n), r=int(r), p=int(p))
        return hmac.compare_digest(computed, base64.b64decode(digest))
    except ValueError:
        return False


def load_or_create_signing_key(path: Path) -> bytes:
    """The key in the file --signing-key-file names: the operator of the service's own (a mounted Secret), read
    as it is. Without that setting the key is the service's, encrypted in its database (atrest.signing_key)."""
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    # Created 0600, never readable by others even for a moment; O_EXCL: never over a file that appeared meanwhile.
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(key)
    return key


@dataclass(frozen=True)
class Principal:
    username: str
    instance_id: str


class TokenIssuer:
    def __init__(self, db: Database, key: bytes, ttl_seconds: int) -> None:
        self._db = db
        self._key = key
        self._ttl = ttl_seconds
        # Verifying an unknown user costs the same as a known one, so timing does not reveal which names exist.
        # Held here, not in a module global, so each service (and each test's) has its own.
        self._dummy_hash = hash_password(secrets.token_urlsafe(12))

    def authenticate(self, username: str, password: str) -> Principal:
        user = self._db.user(username)
        ok = verify_password(password, user.password_hash if user else self._dummy_hash)
        if not user or not ok:
            raise APIError(401, "invalid_credentials", "Invalid username or password.")
        return Principal(user.username, user.instance_id)

    def issue(self, principal: Principal) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"instanceId": principal.instance_id, "userId": principal.username,
                                  "iss": ISSUER, "iat": now, "exp": now + self._ttl}
        # Spelled so that the v3-era Python client, which decodes it with the wrong base64 alphabet, reads it.
        return encode_hs256(claims, self._key)

    def _decode(self, token: str, *, verify_exp: bool) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._key, algorithms=["HS256"], issuer=ISSUER,
                options={"verify_exp": verify_exp, "require": ["exp", "iat", "instanceId", "userId"]})
        except jwt.ExpiredSignatureError as exc:
            raise APIError(401, "expired_authorization_token", "The authorization token has expired.") from exc
        except jwt.InvalidSignatureError as exc:  # a subclass of DecodeError: a real JWT, not ours
            raise APIError(401, "invalid_authorization_token", "The authorization token is not valid.") from exc
        except jwt.DecodeError as exc:
            raise APIError(401, "invalid_token_format", "The authorization token is not a valid JWT.") from exc
        except jwt.InvalidTokenError as exc:
            raise APIError(401, "invalid_authorization_token", "The authorization token is not valid.") from exc
        return claims

    def verify(self, token: str) -> Principal:
        claims = self._decode(token, verify_exp=True)
        user = self._db.user(str(claims["userId"]))
        # A deleted user, or one moved to another instance, loses its tokens at once.
        if not user or user.instance_id != claims["instanceId"]:
            raise APIError(401, "invalid_authorization_token", "The authorization token is not valid.")
        return Principal(user.username, user.instance_id)

    def refresh(self, token: str) -> str:
        return self.issue(self.renewable(token))

    def renewable(self, token: str) -> Principal:
        """Whose token this is, if a refresh may renew it: validly signed, expired at most the grace ago, its user
        still there on the same instance."""
        claims = self._decode(token, verify_exp=False)
        if int(claims["exp"]) + REFRESH_GRACE_SECONDS < time.time():
            raise APIError(401, "expired_authorization_token", "The token expired too long ago to be refreshed.")
        user = self._db.user(str(claims["userId"]))
        if not user or user.instance_id != claims["instanceId"]:
            raise APIError(401, "invalid_authorization_token", "The credentials behind this token are gone.")
        return Principal(user.username, user.instance_id)
