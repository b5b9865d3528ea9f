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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

CHUNK = 1 << 20
CONNECT_TIMEOUT, READ_TIMEOUT = 5.0, 30.0


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


def to_file(chunks: Iterable[bytes], limit: int, field: str, directory: str | None = None) -> tuple[Path, str, int]:
    """Writes `chunks` to a new temporary file (0600) while hashing them: (path, sha256 hex, size). Past `limit`
    bytes: ModelTooLarge, and no file."""
    fd, name = tempfile.mkstemp(prefix="wml-model-", dir=directory)
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
    try:
        response = session.get(url, headers=request_headers, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
    except requests.RequestException as exc:
        raise SourceError("SourceUnreachable", f"{field}: cannot get {shown(url)}: {type(exc).__name__}",
                          transient=True) from None
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
