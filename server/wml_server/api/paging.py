"""List bodies: `count` and `resources` (the 2017 form), with `limit`, `first` and `next` when paged."""

from __future__ import annotations

from typing import Any, TypeVar

from wml_api.models import Link, ResourceList

# Offsets past this are refused with 400: SQLite's integers stop at 2**63 - 1, and a larger `start` used to
# overflow in the query (a 500, found by the fuzzer).
MAX_START = 1_000_000_000

L = TypeVar("L", bound=ResourceList[Any])


def page(kind: type[L], resources: list[Any], total: int, start: int, limit: int, url: str) -> L:
    # A full page only announces `next`: the total is counted in a second query, and a delete in between must
    # not announce a next page that is not there.
    more = len(resources) == limit and start + limit < total
    return kind(count=total, limit=limit, resources=resources, first=Link(url=f"{url}?limit={limit}"),
                next=Link(url=f"{url}?start={start + limit}&limit={limit}") if more else None)
