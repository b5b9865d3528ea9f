"""The PublishedModel resource as pydantic models: the spec users write and the status we report.

As for StreamingDeployment (wml_operator.spec), the CRD is generated from these (`python -m wml_operator.crd
publishedmodels`) and a test fails when the two disagree; every field has a description for `kubectl explain`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wml_operator.spec import (
    _KEY,
    _NAME,
    _UUIDISH,
    CATEGORIES,
    GROUP,
    VERSION,
    Condition,
    DeletionPolicy,
    EndpointStatus,
    KopfState,
    WMLEndpoint,
    _Model,
)

KIND = "PublishedModel"
PLURAL = "publishedmodels"
SINGULAR = "publishedmodel"
SHORT_NAMES = ["pmodel"]
__all__ = ["CATEGORIES", "GROUP", "KIND", "PLURAL", "VERSION"]

DEFAULT_CHECK_SECONDS = 300
SHORT_DIGEST = 12


class FrameworkName(StrEnum):
    """The names the WML service takes (server/wml_server/repository/frameworks.py: its aliases)."""

    SCIKIT_LEARN = "scikit-learn"
    SKLEARN = "sklearn"
    SCIKIT_LEARN_UNDERSCORE = "scikit_learn"
    MLLIB = "mllib"
    SPARK_MLLIB = "spark-mllib"
    SPARK = "spark"
    SPARKML = "sparkml"


class FrameworkSpec(_Model):
    name: Annotated[FrameworkName, Field(description="The model's framework: scikit-learn (or sklearn, "
                                                     "scikit_learn) for a pickle, joblib, tar.gz or skops file; "
                                                     "mllib (or spark-mllib, spark, sparkml) for a .tar.gz of a "
                                                     "saved Spark MLlib PipelineModel.")]
    version: Annotated[str | None, Field(default=None, min_length=1, max_length=32, pattern=r"^[0-9A-Za-z._+-]+$",
                                         description="The framework's version, e.g. 1.5; defaults to what the "
                                                     "service runs.")]


class HeadersSecretRef(_Model):
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=_NAME,
                               description="Name of the Secret, in the PublishedModel's namespace.")]


class UrlSource(_Model):
    url: Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://[^\s]+$",
                              description="http(s) URL of the model's content, fetched by the operator.")]
    sha256: Annotated[str | None, Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="Expected SHA-256 of the content (64 lowercase hex characters): the content is refused "
                    "(DigestMismatch) when it differs. With it, the content is pinned: only a spec change fetches "
                    "it again. Without it, the URL is looked at again every checkIntervalSeconds.")]
    headers_secret_ref: Annotated[HeadersSecretRef | None, Field(
        default=None, alias="headersSecretRef",
        description="Secret whose keys are request header names (e.g. Authorization) and values their values, "
                    "sent with the request; they never appear in status, events or logs.")]


class ConfigMapKeyRef(_Model):
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=_NAME,
                               description="Name of the ConfigMap, in the PublishedModel's namespace.")]
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=_KEY,
                              description="Key of binaryData (or data) holding the model's content.")]


_ONE_SOURCE = ("(has(self.url) ? 1 : 0) + (has(self.configMapRef) ? 1 : 0) + (has(self.modelId) ? 1 : 0) == 1")


class Source(_Model):
    # The same rule as the validator below, checked by the API server when the resource is applied.
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": _ONE_SOURCE, "message": "exactly one of url, configMapRef and modelId must be set"}]})

    url: Annotated[UrlSource | None, Field(default=None, description="Fetch the content from an http(s) URL.")]
    config_map_ref: Annotated[ConfigMapKeyRef | None, Field(
        default=None, alias="configMapRef",
        description="Take the content from a key of a ConfigMap in the same namespace (binaryData, else data); "
                    "looked at again every checkIntervalSeconds.")]
    model_id: Annotated[str | None, Field(
        default=None, alias="modelId", min_length=1, max_length=128, pattern=_UUIDISH,
        description="Adopt a model already published in WML, by its id: nothing is uploaded.")]

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        if sum(x is not None for x in (self.url, self.config_map_ref, self.model_id)) != 1:
            raise ValueError("exactly one of url, configMapRef and modelId must be set")
        return self


class PublishedModelSpec(_Model):
    """A model to publish in WML's repository, from a URL, a ConfigMap, or one published already."""

    framework: Annotated[FrameworkSpec, Field(description="What the model is made with.")]
    source: Annotated[Source, Field(description="Where the model's content comes from: exactly one of url, "
                                                "configMapRef and modelId.")]
    # Free-form on purpose, the only such field: Spark's StructType JSON, recursive (struct fields of struct
    # type), which a structural schema cannot spell out; the WML service checks it and answers
    # invalid_input_schema saying what is wrong, which becomes Stalled/ModelRefused.
    input_data_schema: Annotated[dict[str, Any] | None, Field(
        default=None, alias="inputDataSchema",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="The model's input schema, Spark's StructType as JSON: {type: struct, fields: [{name, type, "
                    "nullable, metadata}]}. Cannot change once the model is published.")]
    label_column: Annotated[str | None, Field(default=None, alias="labelColumn", min_length=1, max_length=256,
                                              description="The label column the model was trained on.")]
    label_values: Annotated[list[Annotated[str, Field(max_length=256)]] | None, Field(
        default=None, alias="labelValues", max_length=1000,
        description="The values the model predicts, e.g. [NEGATIVE, POSITIVE].")]
    wml: Annotated[WMLEndpoint | None, Field(default=None, description="The WML API to publish to; optional "
                                                                        "when the operator has a default endpoint.")]
    deletion_policy: Annotated[DeletionPolicy | None, Field(
        default=None, alias="deletionPolicy",
        description="Delete: deleting the resource deletes the model from WML (once no StreamingDeployment "
                    "references it). Orphan: leaves it. Defaults to Delete, but to Orphan for an adopted model "
                    "(source.modelId): the operator deletes only what it published unless told otherwise.")]
    check_interval_seconds: Annotated[int, Field(
        default=DEFAULT_CHECK_SECONDS, alias="checkIntervalSeconds", ge=10, le=7 * 86400,
        description="How often a url without sha256, or a ConfigMap, is looked at again for new content "
                    "(a url with sha256 is pinned by its digest: only a spec change fetches it again).")]

    @property
    def policy(self) -> DeletionPolicy:
        if self.deletion_policy is not None:
            return DeletionPolicy(self.deletion_policy)
        return DeletionPolicy.ORPHAN if self.source.model_id else DeletionPolicy.DELETE


class PublishedModelStatus(BaseModel):
    """What the operator observed. Never holds a credential or a header value."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    observed_generation: Annotated[int | None, Field(default=None, alias="observedGeneration",
                                                     description="The metadata.generation last reconciled.")]
    model_id: Annotated[str | None, Field(default=None, alias="modelId", description="Id of the model in WML.")]
    version_id: Annotated[str | None, Field(default=None, alias="versionId",
                                            description="Id of the model's version with the current content.")]
    digest: Annotated[str | None, Field(default=None, description="SHA-256 (hex) of the published content.")]
    digest_short: Annotated[str | None, Field(default=None, alias="digestShort",
                                              description="The first 12 hex characters of digest.")]
    etag: Annotated[str | None, Field(default=None, description="The URL's ETag when the content was last "
                                                                "fetched (a conditional request's validator).")]
    last_modified: Annotated[str | None, Field(default=None, alias="lastModified",
                                               description="The URL's Last-Modified when the content was last "
                                                           "fetched.")]
    source_ref: Annotated[str | None, Field(default=None, alias="sourceRef",
                                            description="A hash of the URL, endpoint and metadata that etag and "
                                                        "lastModified are of (a conditional request is only sent "
                                                        "while they are the same).")]
    meta_hash: Annotated[str | None, Field(default=None, alias="metaHash",
                                           description="Hash of the metadata the model was published with "
                                                       "(framework, schema, label column and values).")]
    last_check_time: Annotated[str | None, Field(default=None, alias="lastCheckTime",
                                                 description="When the source was last looked at.")]
    message: Annotated[str | None, Field(default=None, description="Last notable message.")]
    held_by: Annotated[list[str] | None, Field(default=None, alias="heldBy",
                                               description="StreamingDeployments that reference this model while "
                                                           "its deletion waits for them.")]
    endpoint: Annotated[EndpointStatus | None, Field(default=None, description="The WML endpoint the model "
                                                                               "lives on.")]
    conditions: Annotated[list[Condition], Field(default_factory=list,
                                                 description="Ready, Reconciling and Stalled (kstatus).")]
    kopf: Annotated[KopfState | None, Field(default=None, description="The operator framework's bookkeeping.")]


def parse_spec(raw: object) -> PublishedModelSpec:
    return PublishedModelSpec.model_validate(raw)
