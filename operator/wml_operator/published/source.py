"""Fetching a model's content: from an http(s) URL or a ConfigMap, to a temporary file, streamed.

The content is never held whole in memory: it is written as it arrives, its SHA-256 computed on the way, and
refused past the size limit. Errors are `SourceError`s whose reason is a condition reason and whose message
names the field; neither ever carries a header value or a URL's query (which may hold a token).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

CHUNK = 1 << 20
CONNECT_TIMEOUT, READ_TIMEOUT = 5.0, 30.0
MAX_REDIRECTS = 5


class SourceError(Exception):
    """The content could not be had. `transient`: worth retrying with backoff (the URL's host unreachable, or
    answering 5xx or 429); otherwise a user fix is needed (Stalled)."""

    def __init__(self, reason: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.transient = transient


@dataclass(frozen=True)
class Fetched:
    """The content in a temporary file (the caller deletes it, `discard()`), or `path` None when the URL said it
    did not change since `etag`/`last_modified` (304)."""

    path: Path | None
    digest: str | None
    size: int = 0
    etag: str | None = None
    last_modified: str | None = None

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def shown(url: str) -> str:
    """The URL as messages show it: scheme, host and path only (a query may carry a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _too_large(field: str, limit: int) -> SourceError:
    return SourceError("ModelTooLarge", f"{field}: the content is larger than {limit} bytes "
                                        "(the operator's WML_OPERATOR_MODEL_MAX_BYTES)")


PREFIX = "wml-model-"


def sweep_leftovers(directory: str | None = None, older_than: float = 600.0) -> int:
    """Deletes downloads that a killed operator left (a download in progress writes its file all the time);
    the number deleted."""
    folder = Path(directory or tempfile.gettempdir())
    gone = 0
    for path in folder.glob(PREFIX + "*"):
        try:
            if time.time() - path.stat().st_mtime > older_than:
                path.unlink()
                gone += 1
        except OSError:
            continue  # another process's, or gone already
    return gone


def to_file(chunks: Iterable[bytes], limit: int, field: str, directory: str | None = None) -> tuple[Path, str, int]:
    """Writes `chunks` to a new temporary file (0600) while hashing them: (path, sha256 hex, size). Past `limit`
    bytes: ModelTooLarge, and no file."""
    fd, name = tempfile.mkstemp(prefix=PREFIX, dir=directory)
    path, digest, size = Path(name), hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise _too_large(field, limit)
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest(), size


def fetch_url(session: requests.Session, url: str, headers: Mapping[str, str], limit: int, *,
              etag: str | None = None, last_modified: str | None = None, directory: str | None = None) -> Fetched:
    """GET `url` (conditional when a validator is given), streamed to a file."""
    field = "spec.source.url.url"
    request_headers = {"Accept": "application/octet-stream, */*", **headers}
    if etag:
        request_headers["If-None-Match"] = etag
    elif last_modified:
        request_headers["If-Modified-Since"] = last_modified
    response = _get(session, url, request_headers, set(headers), field)
    with response:
        status = response.status_code
        if status == 304:
            return Fetched(None, None, etag=etag, last_modified=last_modified)
        if status in (404, 410):
            raise SourceError("SourceNotFound", f"{field}: {shown(url)} answered {status}: no such content")
        if status == 429 or status >= 500:
            raise SourceError("SourceUnreachable", f"{field}: {shown(url)} answered {status}", transient=True)
        if not 200 <= status < 300:
            raise SourceError("SourceRefused", f"{field}: {shown(url)} answered {status} (headersSecretRef "
                                               "gives the request's headers, e.g. Authorization)")
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            raise _too_large(field, limit)
        try:
            path, digest, size = to_file(response.iter_content(CHUNK), limit, field, directory)
        except requests.RequestException as exc:
            raise SourceError("SourceUnreachable", f"{field}: reading {shown(url)} failed: {type(exc).__name__}",
                              transient=True) from None
        return Fetched(path, digest, size, response.headers.get("ETag"), response.headers.get("Last-Modified"))


def _get(session: requests.Session, url: str, headers: dict[str, str], secret: set[str],
         field: str) -> requests.Response:
    """GET, following redirects by hand: the headers from headersSecretRef (`secret`) go to the URL's own origin
    only (requests would pass on any but Authorization to whatever host a redirect names), and never from https
    down to http."""
    origin = urlsplit(url)[:2]
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = session.get(url, headers=headers, stream=True, allow_redirects=False,
                                   timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
        except requests.RequestException as exc:
            raise SourceError("SourceUnreachable", f"{field}: cannot get {shown(url)}: {type(exc).__name__}",
                              transient=True) from None
        location = response.headers.get("Location") if response.is_redirect else None
        if not location:
            return response
        response.close()
        target = urljoin(url, location)
        if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
            raise SourceError("SourceRefused", f"{field}: {shown(url)} redirects to {shown(target)}, from https to "
                                               "plain http")
        if urlsplit(target)[:2] != origin:
            headers = {k: v for k, v in headers.items() if k not in secret}
        url = target
    raise SourceError("SourceRefused", f"{field}: more than {MAX_REDIRECTS} redirects from {shown(url)}")


def from_config_map(config_map: Mapping[str, Any] | None, namespace: str, name: str, key: str, limit: int,
                    directory: str | None = None) -> Fetched:
    """The content of `binaryData[key]` (base64, as the API gives it), else `data[key]`, of a ConfigMap as the API
    returned it (None: it does not exist)."""
    field = "spec.source.configMapRef"
    if config_map is None:
        raise SourceError("ConfigMapNotFound", f"{field}: ConfigMap {namespace}/{name} does not exist")
    binary = config_map.get("binaryData") or config_map.get("binary_data") or {}
    data = config_map.get("data") or {}
    if key in binary:
        try:
            content = base64.b64decode(binary[key], validate=True)
        except (binascii.Error, ValueError):
            raise SourceError("ConfigMapKeyMissing", f"{field}: ConfigMap {namespace}/{name} binaryData "
                                                     f"{key!r} is not base64") from None
    elif key in data:
        content = str(data[key]).encode()
    else:
        raise SourceError("ConfigMapKeyMissing", f"{field}: ConfigMap {namespace}/{name} has no key {key!r} in "
                                                 "binaryData or data")
    path, digest, size = to_file((content[i:i + CHUNK] for i in range(0, len(content), CHUNK)), limit, field,
                                 directory)
    return Fetched(path, digest, size)
