"""One HTTP exchange with a WML server: timing, the observation hook, and no raw `requests` error escaping.

A response of any status is returned; deciding what a status means is the caller's job. Only the failure to
get a response at all (timeout, refused connection, TLS) is raised here, as the matching `WMLError`.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.auth import HTTPBasicAuth

from wml_api.errors import BadRequest, TLSError, Unavailable, WMLError

log = logging.getLogger("wml_api")

# (method, path template such as /v3/wml_instances/{instance_id}, status or None, seconds)
OnResponse = Callable[[str, str, int | None, float], None]


def normalize_base_url(base_url: str) -> str:
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("WML base URL must be an absolute http(s) URL, such as https://wml.example.com")
    if parts.username is not None or parts.password is not None:
        # Credentials belong in WMLCredentials; in a URL they would leak into every log line that shows it.
        raise ValueError("WML base URL must not contain credentials")
    if parts.query or parts.fragment:
        raise ValueError("WML base URL must not contain a query or fragment")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception urllib3 wrapped: the one whose text says what actually happened."""
    seen: set[int] = set()
    current: BaseException = exc
    while id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError | socket.gaierror):
            return current
        if isinstance(current, OSError) and current.strerror and not isinstance(current, requests.RequestException):
            return current
        nested = getattr(current, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((a for a in current.args if isinstance(a, BaseException)), None)
        nested = nested or current.__cause__ or current.__context__
        if nested is None:
            break
        current = nested
    return current


def _describe(cause: BaseException) -> str:
    if isinstance(cause, ssl.SSLCertVerificationError):
        return cause.verify_message or "certificate verify failed"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    text = str(cause)
    # urllib3 wrappers print object addresses and URLs; the class name is the honest short form.
    return type(cause).__name__ if not text or "object at 0x" in text or "://" in text else text[:200]


def _as_is(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """The auth of a request that carries its own Authorization header (or none). Without an auth, requests
    reads ~/.netrc on every call (a file lookup each time, 3 % of the operator's CPU in a burst) and, when it
    has an entry for the host, replaces the bearer token with that entry's Basic credentials."""
    return request


class Transport:
    def __init__(self, base_url: str, *, session: requests.Session | None, verify: bool | str,
                 connect_timeout: float, read_timeout: float, user_agent: str,
                 on_response: OnResponse | None) -> None:
        self.base_url = normalize_base_url(base_url)
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(self.base_url))
        self.host = urlsplit(self.base_url).netloc
        self._owns_session = session is None
        self.session = session if session is not None else requests.Session()
        self.verify = verify
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.user_agent = user_agent
        self.on_response = on_response

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def send(self, method: str, template: str, path: str, *, url: str | None = None,
             params: Mapping[str, str] | None = None, json: Any = None,
             headers: Mapping[str, str] | None = None, basic_auth: tuple[bytes, bytes] | None = None,
             data: Any = None) -> requests.Response:
        """`path` names the request in logs and errors; `url` overrides where it goes (a `next` page)."""
        all_headers = {"User-Agent": self.user_agent, "Accept": "application/json", **(headers or {})}
        started = time.monotonic()
        status: int | None = None
        try:
            response = self.session.request(
                method, url or self.base_url + path, params=params, json=json, data=data, headers=all_headers,
                auth=HTTPBasicAuth(*basic_auth) if basic_auth else _as_is, verify=self.verify,
                timeout=(self.connect_timeout, self.read_timeout),
                # A redirect would turn a POST into a GET and may carry the bearer token elsewhere.
                allow_redirects=False)
            status = response.status_code
            return response
        except requests.RequestException as exc:
            raise self._error(method, path, exc) from None
        finally:
            elapsed = time.monotonic() - started
            log.debug("%s %s -> %s in %.0f ms", method, path, status if status is not None else "error",
                      elapsed * 1000)
            self._observe(method, template, status, elapsed)

    def _observe(self, method: str, template: str, status: int | None, seconds: float) -> None:
        if self.on_response is None:
            return
        try:
            self.on_response(method, template, status, seconds)
        except Exception:
            # Metrics must never break a reconcile.
            log.debug("on_response hook failed", exc_info=True)

    def _error(self, method: str, path: str, exc: requests.RequestException) -> WMLError:
        cls: type[WMLError] = Unavailable
        if isinstance(exc, requests.exceptions.SSLError):
            cls, message = TLSError, f"TLS with {self.host} failed: {_describe(_root_cause(exc))}"
        elif isinstance(exc, requests.exceptions.ConnectTimeout):
            message = f"timed out after {self.connect_timeout:g}s connecting to {self.host}"
        elif isinstance(exc, requests.exceptions.ReadTimeout):
            message = f"no response from {self.host} within {self.read_timeout:g}s"
        elif isinstance(exc, requests.exceptions.ConnectionError):
            message = f"cannot connect to {self.host}: {_describe(_root_cause(exc))}"
        elif isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.InvalidSchema
                        | requests.exceptions.MissingSchema | requests.exceptions.InvalidHeader):
            cls, message = BadRequest, f"invalid request: {type(exc).__name__}"
        else:
            message = f"request to {self.host} failed: {_describe(_root_cause(exc))}"
        return cls(message, method=method, path=path)
