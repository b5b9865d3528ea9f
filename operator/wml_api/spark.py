"""The `X-Spark-Service-Instance` header: base64 of the Spark credentials JSON, as the 2017 page builds it."""

from __future__ import annotations

import base64
import binascii
import json

from pydantic import ValidationError

from wml_api.wire import WireModel, describe_validation_error

SPARK_HEADER = "X-Spark-Service-Instance"


class SparkHeaderError(ValueError):
    """The header is missing, not base64, not JSON, or not the expected object."""


class SparkCredentials(WireModel):
    _secret_fields = frozenset({"tenant_secret"})

    tenant_id: str
    tenant_id_full: str
    cluster_master_url: str
    instance_id: str
    tenant_secret: str
    plan: str


class SparkServiceInstance(WireModel):
    credentials: SparkCredentials
    version: str = "2.0"

    def to_header(self) -> str:
        return base64.b64encode(self.model_dump_json(exclude_none=True).encode()).decode("ascii")

    @classmethod
    def from_header(cls, value: str) -> SparkServiceInstance:
        # Messages never quote the value: it holds the tenant secret.
        compact = "".join((value or "").split())  # `base64` without --wrap=0 breaks lines
        if not compact:
            raise SparkHeaderError(f"{SPARK_HEADER} header is empty")
        try:
            raw = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SparkHeaderError(f"{SPARK_HEADER} header is not valid base64") from None
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise SparkHeaderError(f"{SPARK_HEADER} header is not base64 of a JSON document") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SparkHeaderError(f"{SPARK_HEADER} header: {describe_validation_error(exc)}") from None
