"""Where kopf keeps what it last handled of each resource: in the status, written with ours in one request.

kopf compares each resource with the copy of its spec (and labels and annotations) it stored after the last
successful handler run, to tell a change from a resync. Kept in an annotation, that copy costs a write of the
resource itself beside the status write of the same pass: two apiserver writes per change, where one does.
Kept in `status.kopf.last-handled-configuration` (a string in the CRD's schema), kopf sends it in the same
merge patch of the status subresource as the status the handler wrote.

Resources handled before this change carry the copy in the annotation: it is still read when the status has
none, so upgrading does not make every resource look new (which would reconcile them all at once).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf

from wml_operator.spec import GROUP

PREFIX = f"kopf.{GROUP}"  # kopf's own bookkeeping, beside (never under) our wmlstream.dev/ annotations
KEY = "last-handled-configuration"
STATUS_FIELD = f"status.kopf.{KEY}"


class StatusDiffBase(kopf.DiffBaseStorage):
    def __init__(self) -> None:
        super().__init__()
        self._status = kopf.StatusDiffBaseStorage(field=STATUS_FIELD)
        self._annotation = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX, key=KEY)

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        # The annotation storage's essence leaves out the annotation an older version wrote, so that a resource
        # still carrying it compares equal to the copy read from it.
        return self._annotation.build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._status.fetch(body=body) or self._annotation.fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._status.store(body=body, patch=patch, essence=essence)
