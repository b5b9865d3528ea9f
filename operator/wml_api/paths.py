"""The v3 URL templates, once: the client fills them in, the service routes on them and links with them."""

from __future__ import annotations

from urllib.parse import quote

INSTANCE = "/v3/wml_instances/{instance_id}"
MODELS = INSTANCE + "/published_models"
MODEL = MODELS + "/{model_id}"
MODEL_DEPLOYMENTS = MODEL + "/deployments"
MODEL_DEPLOYMENT = MODEL_DEPLOYMENTS + "/{deployment_id}"
INSTANCE_DEPLOYMENTS = INSTANCE + "/deployments"
INSTANCE_DEPLOYMENT = INSTANCE_DEPLOYMENTS + "/{deployment_id}"
# The model's one version, as links in published models and deployments name it.
MODEL_VERSION = MODEL + "/versions/{version_id}"

IDENTITY_V3 = "/v3/identity/token"
# The 2017 page asked for tokens here; servers answer both.
IDENTITY_V2 = "/v2/identity/token"


def fill(template: str, **ids: str) -> str:
    """The path with every id quoted, so a hostile or mistyped id ("../..", "a/b") stays in its own segment."""
    if any(not v for v in ids.values()):
        raise ValueError(f"empty id in {template}")
    return template.format(**{k: quote(v, safe="") for k, v in ids.items()})
