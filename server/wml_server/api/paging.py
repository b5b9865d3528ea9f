"""List bodies: `count` and `resources` (the 2017 form), with `limit`, `first` and `next` when paged."""

from __future__ import annotations

from typing import Any

# Offsets past this are refused with 400: SQLite's integers stop at 2**63 - 1, and a larger `start` used to
# overflow in the query (a 500, found by the fuzzer).
MAX_START = 1_000_000_000


def page(resources: list[dict[str, Any]], total: int, start: int, limit: int, url: str) -> dict[str, Any]:
    body: dict[str, Any] = {"count": total, "limit": limit, "first": {"url": f"{url}?limit={limit}"},
                            "resources": resources}
    # A full page only: the total is counted in a second query, and a delete in between must not announce a
    # next page that is not there.
    if len(resources) == limit and start + limit < total:
        body["next"] = {"url": f"{url}?start={start + limit}&limit={limit}"}
    return body
