"""Where a deployment's stream runs: the `cluster_master_url` of its `X-Spark-Service-Instance` credentials.

- `spark://host:port` (a standalone cluster) or `local`, `local[N]`, `local[*]`: Spark, if the service's
  administrator allowed that master (WML_SERVER_SPARK_MASTERS); any other such URL is refused with a 400, so a
  header cannot make the service connect anywhere.
- anything else (the original's `https://spark.bluemix.net`, a test's placeholder): the built-in engine.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import socket
from collections.abc import Iterable
from typing import Any

from wml_server.errors import APIError

SPARK_MASTER_NOT_ALLOWED = "spark_master_not_allowed"

_STANDALONE = re.compile(r"^spark://[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
_LOCAL = re.compile(r"^local(\[(\d{1,3}|\*)\])?$")


@functools.cache
def spark_version() -> str:
    """The installed pyspark's version, without importing pyspark (the API process never loads it)."""
    try:
        return importlib.metadata.version("pyspark")
    except importlib.metadata.PackageNotFoundError:
        return "unavailable"


def is_spark_master(url: str) -> bool:
    return url.startswith("spark://") or url == "local" or url.startswith("local[")


def normalized(url: str) -> str:
    return url.strip().rstrip("/")


def parse_allowed(value: str | Iterable[str]) -> tuple[str, ...]:
    """WML_SERVER_SPARK_MASTERS: master URLs separated by commas or spaces; each must be a Spark master."""
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    allowed = tuple(normalized(item) for item in items if item.strip())
    for url in allowed:
        if not (_STANDALONE.match(url) or _LOCAL.match(url)):
            raise ValueError(f"{url!r} is not a Spark master URL (spark://host:port, local or local[N])")
    return allowed


def spark_master(spark: dict[str, Any] | None, allowed: tuple[str, ...]) -> str | None:
    """The Spark master a deployment with these stored credentials runs on; None: the built-in engine.

    Raises APIError 400 spark_master_not_allowed for a Spark master the administrator did not allow."""
    if not spark:
        return None
    url = normalized(str((spark.get("credentials") or {}).get("cluster_master_url") or ""))
    if not is_spark_master(url):
        return None
    if url not in allowed:
        # The URL is the user's own input, not a secret; shown cut short so a long one cannot flood a log line.
        shown = url if len(url) <= 100 else url[:100] + "..."
        hint = (f"allowed: {', '.join(allowed)}" if allowed else
                "this service allows none (its administrator sets WML_SERVER_SPARK_MASTERS)")
        raise APIError(400, SPARK_MASTER_NOT_ALLOWED,
                       f"The Spark master `{shown}` of the `X-Spark-Service-Instance` credentials is not one this "
                       f"service submits to; {hint}.")
    return url


SPARK_MASTER_UNREACHABLE = "spark_master_unreachable"


def reachable(master: str, timeout: float = 5.0) -> bool:
    """True when a standalone master answers on its port (local[N] always does); else APIError 503 (a dry run's
    check: the master may be back in a moment)."""
    if not master.startswith("spark://"):
        return True
    host, _, port = master.removeprefix("spark://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError as exc:
        raise APIError(503, SPARK_MASTER_UNREACHABLE,
                       f"The Spark master {master} did not answer: {type(exc).__name__}.",
                       {"Retry-After": "10"}) from None
