"""The PublishedModel's decisions, pure: whether to fetch, what to do with what was fetched, when to look again,
what the status says, and what a StreamingDeployment may use (`ready_model`). Table-tested in
tests/unit/test_published_model.py; `run.py` carries them out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from wml_operator import conditions
from wml_operator.conditions import Says
from wml_operator.published.spec import SHORT_DIGEST, PublishedModelSpec

RETRY_MAX_SECONDS = 300.0
DELETE_WAIT_SECONDS = 5.0


class Do(Enum):
    NOTHING = "nothing"  # WML has this content already: no write
    PUBLISH = "publish"  # a new model with this content
    NEW_VERSION = "new-version"  # a new version of the model
    ADOPT = "adopt"  # the model (and its version) exists: record it


@dataclass(frozen=True)
class Seen:
    """A model as WML showed it: its id, latest stored version and that version's content digest."""

    model_id: str
    version_id: str | None
    digest: str | None


@dataclass(frozen=True)
class Decision:
    do: Do
    model_id: str | None = None
    stalled: Says | None = None


def meta_hash(spec: PublishedModelSpec) -> str:
    """What the model (not a version) is made with: it cannot change once published."""
    material = {"framework": spec.framework.model_dump(mode="json", exclude_none=True),
                "schema": spec.input_data_schema, "label": spec.label_column, "values": spec.label_values}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def pinned(spec: PublishedModelSpec) -> str | None:
    """The digest the spec pins its content to (a url with sha256), if it does."""
    return spec.source.url.sha256 if spec.source.url is not None else None


def needs_fetch(spec: PublishedModelSpec, status: Mapping[str, Any], endpoint: Mapping[str, Any]) -> bool:
    """False when the spec pins the content to the digest WML has already, on the same endpoint: no download."""
    digest = pinned(spec)
    return not (digest is not None and status.get("digest") == digest and status.get("modelId")
                and _same_place(status.get("endpoint"), endpoint) and status.get("metaHash") == meta_hash(spec))


def source_ref(spec: PublishedModelSpec, endpoint: Mapping[str, Any]) -> str:
    """What the content WML has was fetched for: the URL (hashed: its query may hold a token), the endpoint and
    the metadata. A conditional request (ETag, Last-Modified) is only sent while this is the same: another URL's
    file may be as old, and another endpoint or new metadata needs the content whatever its age."""
    url = spec.source.url.url if spec.source.url is not None else None
    material = {"url": url, "endpoint": [endpoint.get("url"), endpoint.get("instanceId")], "meta": meta_hash(spec)}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def published_here(status: Mapping[str, Any]) -> bool:
    """Whether the status's model is one this resource published (from a url or a ConfigMap), not one it adopted
    (source.modelId: no metaHash), whose id a new source must not take over."""
    return bool(status.get("modelId") and status.get("metaHash"))


def _same_place(a: Any, b: Mapping[str, Any]) -> bool:
    return isinstance(a, Mapping) and (a.get("url"), a.get("instanceId")) == (b.get("url"), b.get("instanceId"))


def decide(spec: PublishedModelSpec, status: Mapping[str, Any], endpoint: Mapping[str, Any], digest: str,
           marked: Seen | None) -> Decision:
    """What to do with content of `digest`. `marked` is the model carrying this resource's UID in WML, looked up
    only when the status names no model (a pass killed between the POST and the status write)."""
    expected = pinned(spec)
    if expected is not None and expected != digest:
        return Decision(Do.NOTHING, stalled=Says("DigestMismatch", f"spec.source.url.sha256: the content's SHA-256 "
                                                                   f"is {digest}, not {expected}"))
    # Only a model this resource published, on this endpoint, gets the new version; an adopted one never does.
    model_id = status.get("modelId") if published_here(status) and _same_place(status.get("endpoint"), endpoint) \
        else None
    if model_id:
        if status.get("metaHash") not in (None, meta_hash(spec)):
            return Decision(Do.NOTHING, model_id, Says(
                "ImmutableMetadata", f"spec.framework, inputDataSchema, labelColumn and labelValues cannot change "
                                     f"once model {model_id} is published: restore them, or make a new "
                                     "PublishedModel"))
        return Decision(Do.NOTHING if status.get("digest") == digest else Do.NEW_VERSION, model_id)
    if marked is not None:
        return Decision(Do.ADOPT if marked.digest == digest else Do.NEW_VERSION, marked.model_id)
    return Decision(Do.PUBLISH)


def retry_delay(attempts: int, jitter: float) -> float:
    """Backoff after a transient failure (WML or the URL unreachable): 5 s, 10 s, ... up to 5 min."""
    return min(5.0 * 2.0 ** max(attempts - 1, 0), RETRY_MAX_SECONDS) * (0.8 + 0.4 * jitter)


def checks_again(spec: PublishedModelSpec) -> bool:
    """Whether the source is looked at again on a timer: a ConfigMap or a url without sha256."""
    return spec.source.config_map_ref is not None or (spec.source.url is not None and spec.source.url.sha256 is None)


def due(body: Mapping[str, Any], spec: PublishedModelSpec | None, retry_at: float | None, now: float) -> bool:
    """Whether the timer runs a pass now: after a transient failure when its backoff is over; a spec not yet
    observed; a source to check again whose interval passed since the last check (Stalled or not)."""
    if retry_at is not None:
        return now >= retry_at
    status = body.get("status") or {}
    if status.get("observedGeneration") != body["metadata"].get("generation"):
        return True
    if spec is None or not checks_again(spec):
        return False
    last = status.get("lastCheckTime")
    if not last:
        return True
    try:
        at = datetime.strptime(last, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return True
    return now - at >= spec.check_interval_seconds


@dataclass(frozen=True)
class Result:
    """What a pass found, for the status: one of ready (a model and version), stalled or retrying."""

    ready: Says | None = None
    stalled: Says | None = None
    reconciling: Says | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)  # status fields to set (None: remove)
    events: Sequence[tuple[str, str, str]] = ()


def status_of(previous: Mapping[str, Any], generation: int | None, result: Result, now: str) -> dict[str, Any]:
    """The whole new status: the previous one's fields, those the pass set, and the conditions."""
    out = {k: v for k, v in previous.items() if k not in ("conditions", "kopf")}
    for key, value in result.fields.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    if out.get("digest"):
        out["digestShort"] = str(out["digest"])[:SHORT_DIGEST]
    old = list(previous.get("conditions") or [])
    if result.ready is not None:
        ready, ready_says = True, result.ready
        message = result.ready.message
    else:
        ready, message = False, (result.stalled or result.reconciling or Says("", "")).message
        kept = conditions.find(old, conditions.READY)
        # While retrying, Ready keeps what it said of the content published before (it is still there), but only
        # for the spec it was said of: a new spec's content is not published yet.
        if result.stalled is None and kept is not None and kept.get("status") == "True" and \
                previous.get("observedGeneration") == generation:
            ready, ready_says = True, Says(str(kept.get("reason")), str(kept.get("message")))
        else:
            says = result.stalled or result.reconciling or Says("Progressing", "working on it")
            ready_says = Says(says.reason, says.message)
    out["message"] = message
    out["observedGeneration"] = generation
    out["conditions"] = conditions.compute(old, ready=ready, ready_says=ready_says, reconciling=result.reconciling,
                                           stalled=result.stalled, generation=generation, now=now)
    return out


def published_says(model_id: str, version_id: str | None, digest: str | None, adopted: bool) -> Says:
    what = f"model {model_id} version {version_id or '-'}" + (f" (sha256 {digest[:SHORT_DIGEST]})" if digest else "")
    return Says("Adopted" if adopted else "Published", ("Adopted " if adopted else "Published ") + what)


def held_says(names: Sequence[str]) -> Says:
    return Says("DeletionWaiting", "deletion waits: referenced by StreamingDeployment(s) " + ", ".join(names))


def holders(deployments: Sequence[Mapping[str, Any]], name: str) -> list[str]:
    """The StreamingDeployments (of one namespace) whose spec.modelRef.name is `name`; one being deleted still
    holds it until it is gone."""
    out = []
    for item in deployments:
        ref = ((item.get("spec") or {}).get("modelRef") or {})
        if isinstance(ref, Mapping) and ref.get("name") == name:
            out.append(str(item["metadata"]["name"]))
    return sorted(out)


def ready_model(body: Mapping[str, Any]) -> tuple[str, str, str] | str:
    """From a PublishedModel body: (modelId, versionId, digest) when Ready=True for its current generation, else
    a message saying why not (for the StreamingDeployment that references it)."""
    meta = body.get("metadata") or {}
    name = meta.get("name", "?")
    status = body.get("status") or {}
    conds = status.get("conditions") or []
    ready = conditions.find(conds, conditions.READY)
    generation = meta.get("generation")
    if ready is None or status.get("observedGeneration") != generation:
        return f"PublishedModel {name} is not Ready: not yet published at generation {generation}"
    if meta.get("deletionTimestamp"):
        return f"PublishedModel {name} is being deleted"
    stalled = conditions.find(conds, conditions.STALLED)
    if ready.get("status") != "True" or (stalled is not None and stalled.get("status") == "True"):
        why = stalled if stalled is not None and stalled.get("status") == "True" else ready
        return f"PublishedModel {name} is not Ready: {why.get('reason')}: {why.get('message')}"
    model_id, version_id, digest = status.get("modelId"), status.get("versionId"), status.get("digest")
    if not (model_id and version_id):
        return f"PublishedModel {name} is not Ready: no model version recorded"
    return str(model_id), str(version_id), str(digest or "")
