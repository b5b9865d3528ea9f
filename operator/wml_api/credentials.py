"""The username and password a WML instance hands out, kept out of every repr, log line and cache key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from wml_api.wire import MASK


@dataclass(frozen=True)
class WMLCredentials:
    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.username:
            raise ValueError("WML username must not be empty")
        if not self.password:
            raise ValueError("WML password must not be empty")
        if ":" in self.username:
            # HTTP basic auth cannot carry it: the server would split the pair at the wrong place.
            raise ValueError("WML username must not contain ':'")

    def __repr__(self) -> str:
        return f"WMLCredentials(username={self.username!r}, password={MASK!r})"

    __str__ = __repr__

    @property
    def password_sha256(self) -> str:
        return hashlib.sha256(self.password.encode()).hexdigest()

    def cache_key(self, base_url: str) -> tuple[str, str, str]:
        """Identifies a token's owner without keeping the password itself in a long-lived dict."""
        return base_url.rstrip("/"), self.username, self.password_sha256
