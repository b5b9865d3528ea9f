"""Carries a PublishedModel's decisions out (wml_operator.published.publish decides): one pass reads the spec
and its Secrets, fetches the content when it must, publishes what changed, and returns the whole new status.
Nothing here decides; every WML write goes after the login its deletion needs is kept (login_copies)."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Any, BinaryIO, Protocol

import requests
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from wml_api import errors as E
from wml_api.models import describe_validation_error
from wml_api.repository import Framework, ModelAsset, ModelAssetCreate, ModelVersion
from wml_operator.conditions import Says, now_rfc3339
from wml_operator.login_copies import LoginNotKept, Logins
from wml_operator.published import publish as P
from wml_operator.published.source import Fetched, SourceError, fetch_url, from_config_map
from wml_operator.published.spec import PublishedModelSpec, parse_spec
from wml_operator.secrets import Defaults, Endpoint, SecretReader, SpecProblem, endpoint
from wml_operator.spec import DeletionPolicy
from wml_operator.wml import marker

Event = tuple[str, str, str]
FRAMEWORKS = {"sklearn": "scikit-learn", "scikit_learn": "scikit-learn", "spark-mllib": "mllib", "spark": "mllib",
              "sparkml": "mllib"}


log = logging.getLogger(__name__)

class Repository(Protocol):
    """The part of wml_api.client.WMLClient a PublishedModel uses."""

    def list_model_assets(self) -> list[ModelAsset]: ...
    def get_model_asset(self, model_id: str) -> ModelAsset: ...
    def get_model_version(self, model_id: str, version_id: str) -> ModelVersion: ...
    def publish_model(self, meta: ModelAssetCreate, content: BinaryIO) -> ModelAsset: ...
    def add_model_version(self, model_id: str, content: BinaryIO) -> ModelVersion: ...
    def delete_model_asset(self, model_id: str) -> None: ...


class Kube(Protocol):
    def config_map(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The ConfigMap as the API returns it (binaryData base64), or None when it does not exist."""

    def streaming_deployments(self, namespace: str) -> list[Mapping[str, Any]]:
        """The namespace's StreamingDeployments (raw bodies)."""


@dataclass
class Pass:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    retry_after: float | None = None  # transient: run again after this many seconds
    finalized: bool = False  # deletion: the finalizer may go


class _Retry(Exception):
    def __init__(self, says: Says) -> None:
        super().__init__(says.message)
        self.says = says


class Publisher:
    def __init__(self, secrets: SecretReader, clients: Callable[[Endpoint], Repository], kube: Kube,
                 defaults: Defaults, logins: Logins, max_bytes: int,
                 session: requests.Session | None = None) -> None:
        self.secrets = secrets
        self.clients = clients
        self.kube = kube
        self.defaults = defaults
        self.logins = logins
        self.max_bytes = max_bytes
        self.session = session or requests.Session()
        # One session for every resource's downloads: it must keep no cookie one team's token earned for another.
        self.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self._retries: dict[str, tuple[int, float]] = {}  # uid -> (attempts, when to try again)
        self._lock = threading.Lock()
        # One pass of a resource at a time: kopf runs a timer beside the change handlers, and two passes that
        # both publish would make two models.
        self._passes: dict[str, threading.Lock] = {}
        # The Secrets each resource's last pass named, and the resources a change of one of them woke: a rotated
        # login reaches the copy kept for the deletion (login_copies) within a timer tick, not at the next spec
        # change; for a pinned source there may never be another.
        self._secrets: dict[str, frozenset[tuple[str, str]]] = {}
        self._woken: set[str] = set()
        self._finished: dict[str, float] = {}  # uid -> when its last pass ended (monotonic)
        self.on_release: Callable[[list[tuple[str, str]]], None] | None = None  # Secrets no PublishedModel reads
        self.default_secret: tuple[str, str] | None = None
        self.default_ca: tuple[str, str] | None = None  # the default endpoint's CA Secret

    def _pass_lock(self, uid: str) -> threading.Lock:
        with self._lock:
            return self._passes.setdefault(uid, threading.Lock())

    # --- scheduling ------------------------------------------------------------------------------------

    def due(self, body: Mapping[str, Any], now: float | None = None) -> bool:
        try:
            spec: PublishedModelSpec | None = parse_spec(body.get("spec"))
        except ValidationError:
            spec = None
        with self._lock:
            uid = body["metadata"]["uid"]
            retry, woken = self._retries.get(uid), uid in self._woken
        return woken or P.due(body, spec, retry[1] if retry else None, time.time() if now is None else now)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._retries.pop(uid, None)

    def gone(self, uid: str) -> None:
        """The resource no longer exists: nothing is kept for it."""
        with self._lock:
            self._retries.pop(uid, None)
            self._passes.pop(uid, None)
            self._finished.pop(uid, None)
            dropped = self._secrets.pop(uid, frozenset())
            self._woken.discard(uid)
        self._release(dropped)

    def _release(self, keys: frozenset[tuple[str, str]]) -> None:
        """Secrets that no PublishedModel reads any more: the Secret store may drop what it holds of them."""
        with self._lock:
            unread = [key for key in keys if not any(key in names for names in self._secrets.values())]
        if unread and self.on_release is not None:
            self.on_release(unread)

    def references(self, namespace: str, name: str) -> bool:
        """Whether a PublishedModel's last pass read this Secret (the Secret store then holds and watches it)."""
        with self._lock:
            return any((namespace, name) in names for names in self._secrets.values())

    def secret_changed(self, namespace: str, name: str) -> None:
        """A Secret changed: the PublishedModels that read it get a pass at the next timer tick."""
        with self._lock:
            self._woken.update(uid for uid, names in self._secrets.items() if (namespace, name) in names)

    def _refer(self, uid: str, namespace: str, spec: PublishedModelSpec) -> None:
        names = {(namespace, ref.name) for ref in (spec.wml.credentials_secret_ref if spec.wml else None,
                                                   spec.wml.ca_secret_ref if spec.wml else None,
                                                   spec.source.url.headers_secret_ref if spec.source.url else None)
                 if ref is not None}
        if not (spec.wml and spec.wml.credentials_secret_ref) and self.default_secret:
            names.add(self.default_secret)
        if not (spec.wml and spec.wml.ca_secret_ref) and self.default_ca:
            names.add(self.default_ca)
        with self._lock:
            before = self._secrets.get(uid, frozenset())
            self._secrets[uid] = frozenset(names)
            self._woken.discard(uid)
        self._release(before - frozenset(names))

    def _backoff(self, uid: str) -> float:
        with self._lock:
            attempts = self._retries.get(uid, (0, 0.0))[0] + 1
            delay = P.retry_delay(attempts, random.random())  # noqa: S311 (jitter)
            self._retries[uid] = (attempts, time.time() + delay)
        return delay

    # --- a pass ----------------------------------------------------------------------------------------

    def run(self, body: Mapping[str, Any]) -> Pass:
        uid = body["metadata"]["uid"]
        with self._pass_lock(uid):
            try:
                return self._run(body)
            finally:
                with self._lock:
                    self._finished[uid] = time.monotonic()

    def run_if_free(self, body: Mapping[str, Any], quiet: float) -> Pass | None:
        """The timer's pass: none while another pass runs, or when one ended less than `quiet` seconds ago (kopf
        may not have written its status yet, so this body may be older than what that pass found)."""
        uid = body["metadata"]["uid"]
        lock = self._pass_lock(uid)
        if not lock.acquire(blocking=False):
            return None
        try:
            with self._lock:
                ended = self._finished.get(uid)
            if ended is not None and time.monotonic() - ended < quiet:
                return None
            try:
                return self._run(body)
            finally:
                with self._lock:
                    self._finished[uid] = time.monotonic()
        finally:
            lock.release()

    def _run(self, body: Mapping[str, Any]) -> Pass:
        meta = body["metadata"]
        uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
        previous = dict(body.get("status") or {})
        checked = {"lastCheckTime": now_rfc3339(), "heldBy": None}
        try:
            spec = parse_spec(body.get("spec"))
            self._refer(uid, namespace, spec)
            ep = endpoint(self.secrets, namespace, spec.wml, self.defaults)
            try:  # every pass: a rotated login reaches the copy (cached: no API call while it is the same)
                self.logins.keep(uid, f"{namespace}/{name}", [ep])
            except LoginNotKept as exc:
                raise _Retry(Says("LoginNotKept", str(exc))) from None
            headers = self._headers(namespace, spec)
            client = self.clients(ep)
            if spec.source.model_id:
                result = self._adopt(client, spec.source.model_id, ep, previous)
            else:
                result = self._publish(uid, namespace, name, spec, previous, ep, client, headers)
        except ValidationError as exc:
            result = P.Result(stalled=Says("InvalidSpec", f"spec: {describe_validation_error(exc)}"))
        except SpecProblem as exc:
            result = P.Result(stalled=Says(exc.reason, exc.message))
        except SourceError as exc:
            if exc.transient:
                return self._retrying(uid, body, Says(exc.reason, exc.message), checked)
            result = P.Result(stalled=Says(exc.reason, exc.message))
        except _Retry as exc:
            return self._retrying(uid, body, exc.says, checked)
        except ApiException as exc:  # reading the ConfigMap: its status only (the body may hold anything)
            return self._retrying(uid, body, Says("KubernetesUnavailable", f"reading spec.source.configMapRef: "
                                                                           f"{exc.status} {exc.reason}"), checked)
        except E.WMLError as exc:
            if exc.transient or isinstance(exc, E.InvalidResponse):
                return self._retrying(uid, body, Says("WMLUnavailable", f"WML unavailable: {exc}"), checked)
            result = P.Result(stalled=_refused(exc))
        except Exception as exc:
            # The type only: the text of such an error may quote a header value or a Secret's content.
            log.warning("PublishedModel %s/%s: pass failed: %s", namespace, name, type(exc).__name__)
            return self._retrying(uid, body, Says("PassFailed", f"the pass failed ({type(exc).__name__})"), checked)
        self.forget(uid)
        return self._done(body, previous, result, checked)

    def _done(self, body: Mapping[str, Any], previous: Mapping[str, Any], result: P.Result,
              checked: Mapping[str, Any]) -> Pass:
        status = P.status_of(previous, body["metadata"].get("generation"), P.Result(
            result.ready, result.stalled, result.reconciling, {**checked, **result.fields}), now_rfc3339())
        events = list(result.events)
        if result.stalled is not None and _says(previous, "Stalled") != result.stalled.reason:
            events.append(("Warning", result.stalled.reason, result.stalled.message))
        return Pass(status, events)

    def _retrying(self, uid: str, body: Mapping[str, Any], says: Says, checked: Mapping[str, Any]) -> Pass:
        delay = self._backoff(uid)
        says = Says(says.reason, f"{says.message}; retrying in {delay:.0f} s")
        status = P.status_of(dict(body.get("status") or {}), body["metadata"].get("generation"),
                             P.Result(reconciling=says, fields=checked), now_rfc3339())
        return Pass(status, [], retry_after=delay)

    def _headers(self, namespace: str, spec: PublishedModelSpec) -> dict[str, str]:
        url = spec.source.url
        if url is None or url.headers_secret_ref is None:
            return {}
        ref = url.headers_secret_ref.name
        data = self.secrets.read(namespace, ref)
        if data is None:
            raise SpecProblem("SecretNotFound", f"spec.source.url.headersSecretRef: Secret {namespace}/{ref} does "
                                                "not exist")
        return dict(data)

    def _adopt(self, client: Repository, model_id: str, ep: Endpoint, previous: Mapping[str, Any]) -> P.Result:
        try:
            asset = client.get_model_asset(model_id)
        except E.NotFound:
            return P.Result(stalled=Says("ModelNotFound", f"spec.source.modelId: model {model_id} does not exist "
                                                          f"in WML instance {ep.instance_id}"))
        seen = _seen(client, asset)
        if seen.version_id is None:
            raise _Retry(Says("ModelHasNoContent", f"spec.source.modelId: model {model_id} has no version with "
                                                   "stored content yet"))
        left = _left_behind(previous, model_id)
        return P.Result(ready=P.published_says(model_id, seen.version_id, seen.digest, adopted=True),
                        fields={"modelId": model_id, "versionId": seen.version_id, "digest": seen.digest,
                                "endpoint": ep.recorded(), "metaHash": None, "etag": None, "lastModified": None,
                                "sourceRef": None},
                        events=[("Warning", "ModelLeftBehind", left)] if left else [])

    def _fetch(self, namespace: str, spec: PublishedModelSpec, previous: Mapping[str, Any],
               headers: Mapping[str, str], ep_recorded: Mapping[str, Any]) -> Fetched:
        source = spec.source
        if source.url is not None:
            # A conditional request only asks whether the same URL changed since the content WML has: never for
            # another URL (its file may be as old), nor when the spec pins a digest that WML does not have.
            same = P.published_here(previous) and previous.get("digest") and source.url.sha256 is None \
                and previous.get("sourceRef") == P.source_ref(spec, ep_recorded)
            return fetch_url(self.session, source.url.url, headers, self.max_bytes,
                             etag=previous.get("etag") if same else None,
                             last_modified=previous.get("lastModified") if same else None)
        assert source.config_map_ref is not None
        ref = source.config_map_ref
        return from_config_map(self.kube.config_map(namespace, ref.name), namespace, ref.name, ref.key,
                               self.max_bytes)

    def _publish(self, uid: str, namespace: str, name: str, spec: PublishedModelSpec, previous: Mapping[str, Any],
                 ep: Endpoint, client: Repository, headers: Mapping[str, str]) -> P.Result:
        recorded = ep.recorded()
        if not P.needs_fetch(spec, previous, recorded):
            return _as_before(previous)
        fetched = self._fetch(namespace, spec, previous, headers, recorded)
        try:
            kept = {"etag": fetched.etag, "lastModified": fetched.last_modified,
                    "sourceRef": P.source_ref(spec, recorded)}
            if fetched.path is None:  # 304: what WML has is current
                return P.Result(ready=_as_before(previous).ready, fields=kept)
            assert fetched.digest is not None
            marked = None
            if not P.published_here(previous) or not P._same_place(previous.get("endpoint"), recorded):
                marked = _marked(client, uid)
            decision = P.decide(spec, previous, recorded, fetched.digest, marked)
            if decision.stalled is not None:
                return P.Result(stalled=decision.stalled)
            if decision.do is P.Do.NOTHING:
                return P.Result(ready=_as_before(previous).ready, fields=kept)
            model_id, version_id, event = decision.model_id, None, ""
            if decision.do is P.Do.ADOPT:
                assert marked is not None
                version_id, event = marked.version_id, f"Found model {marked.model_id} published before"
            elif decision.do is P.Do.NEW_VERSION:
                assert model_id is not None
                latest = _seen(client, client.get_model_asset(model_id))
                if latest.digest == fetched.digest:
                    # Uploaded by a pass killed before its status write: that version, not a second one.
                    version_id, event = latest.version_id, f"Found version {latest.version_id} of model {model_id}"
                else:
                    log.info("PublishedModel %s/%s: uploading a new version of model %s (sha256 %s)", namespace,
                             name, model_id, fetched.digest[:12])
                    with fetched.path.open("rb") as content:
                        version = client.add_model_version(model_id, content)
                    _check_digest(version, fetched.digest)
                    version_id, event = version.id, f"New version {version.id} of model {model_id}"
            else:
                log.info("PublishedModel %s/%s: publishing a new model (sha256 %s)", namespace, name,
                         fetched.digest[:12])
                with fetched.path.open("rb") as content:
                    asset = client.publish_model(_create(spec, name, uid), content)
                model_id = asset.id
                seen = _seen(client, asset)
                if seen.digest is not None and seen.digest != fetched.digest:
                    raise _Retry(Says("UploadCorrupted", f"WML stored content of SHA-256 {seen.digest}, not "
                                                         f"{fetched.digest}"))
                version_id, event = seen.version_id, f"Published model {model_id}"
            assert model_id is not None
            events = [("Normal", "Published", f"{event} (sha256 {fetched.digest[:12]})")]
            left = _left_behind(previous, model_id)
            if left:
                events.append(("Warning", "ModelLeftBehind", left))
            return P.Result(ready=P.published_says(model_id, version_id, fetched.digest, adopted=False),
                            fields={**kept, "modelId": model_id, "versionId": version_id, "digest": fetched.digest,
                                    "metaHash": P.meta_hash(spec), "endpoint": recorded},
                            events=events)
        finally:
            fetched.discard()

    # --- deletion --------------------------------------------------------------------------------------

    def delete(self, body: Mapping[str, Any]) -> Pass:
        with self._pass_lock(body["metadata"]["uid"]):
            return self._delete(body)

    def _delete(self, body: Mapping[str, Any]) -> Pass:
        meta = body["metadata"]
        uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
        previous = dict(body.get("status") or {})
        model_id = previous.get("modelId")
        if _policy(body) is DeletionPolicy.ORPHAN:
            return Pass(previous, finalized=True)
        if not model_id:
            # Published by a pass whose status never got written (killed, or a failure after the POST)? Its marker
            # says so. Nothing kept, nothing written: every pass keeps the login before its first write.
            found = self._marked_for_deletion(uid, namespace, body)
            if isinstance(found, Pass):
                return found
            if found is None:
                return Pass(previous, finalized=True)
            model_id, previous["endpoint"] = found.model_id, found.endpoint

        held = P.holders(self.kube.streaming_deployments(namespace), name)
        if held:
            says = P.held_says(held)
            status = P.status_of(previous, meta.get("generation"),
                                 P.Result(reconciling=says, fields={"heldBy": held}), now_rfc3339())
            return Pass(status, [("Normal", says.reason, says.message)], retry_after=P.DELETE_WAIT_SECONDS)
        ep = self._deletion_endpoint(uid, namespace, body, previous)
        if ep is None:
            says = Says("CannotDelete", f"cannot delete model {model_id}: the WML credentials Secret is gone and no "
                                        "copy of its login was kept; restore the Secret")
            status = P.status_of(previous, meta.get("generation"), P.Result(stalled=says, fields={"heldBy": None}),
                                 now_rfc3339())
            return Pass(status, [("Warning", says.reason, says.message)], retry_after=30.0)
        try:
            self.clients(ep).delete_model_asset(str(model_id))
        except E.NotFound:
            pass
        except E.WMLError as exc:
            delay = self._backoff(uid) if exc.transient else 15.0
            reason = "WMLUnavailable" if exc.transient else "DeletionRefused"
            says = Says(reason, f"deleting model {model_id}: {exc}; retrying in {delay:.0f} s")
            status = P.status_of(previous, meta.get("generation"), P.Result(reconciling=says, fields={"heldBy": None}),
                                 now_rfc3339())
            return Pass(status, [("Warning", reason, says.message)] if not exc.transient else [],
                        retry_after=delay)
        return Pass(previous, [("Normal", "Deleted", f"Deleted model {model_id} from WML")], finalized=True)

    def _marked_for_deletion(self, uid: str, namespace: str, body: Mapping[str, Any]) -> _Found | Pass | None:
        """The model carrying this resource's marker, on the endpoint of its spec or of the login kept for it."""
        places: list[Endpoint] = []
        with contextlib.suppress(SpecProblem, ValidationError):  # the Secrets may be gone: the kept logins then
            places.append(endpoint(self.secrets, namespace, parse_spec(body.get("spec")).wml, self.defaults))
        places += [kept for kept in self.logins.kept(uid) if not any(kept.same_place(p.recorded()) for p in places)]
        for ep in places:
            try:
                seen = _marked(self.clients(ep), uid)
            except E.WMLError as exc:
                if not exc.transient:
                    continue
                delay = self._backoff(uid)
                says = Says("WMLUnavailable", f"looking for a model published before the status was written: {exc}; "
                                              f"retrying in {delay:.0f} s")
                status = P.status_of(dict(body.get("status") or {}), body["metadata"].get("generation"),
                                     P.Result(reconciling=says), now_rfc3339())
                return Pass(status, [], retry_after=delay)
            if seen is not None:
                return _Found(seen.model_id, ep.recorded())
        return None

    def _deletion_endpoint(self, uid: str, namespace: str, body: Mapping[str, Any],
                           previous: Mapping[str, Any]) -> Endpoint | None:
        recorded = previous.get("endpoint") or {}
        try:
            ep = endpoint(self.secrets, namespace, parse_spec(body.get("spec")).wml, self.defaults)
            if ep.same_place(recorded):
                return ep
        except (SpecProblem, ValidationError):
            pass
        return next((kept for kept in self.logins.kept(uid) if kept.same_place(recorded)), None)


def _policy(body: Mapping[str, Any]) -> DeletionPolicy:
    try:
        return parse_spec(body.get("spec")).policy
    except ValidationError:  # an invalid spec: as it would default
        spec = body.get("spec") or {}
        raw = spec.get("deletionPolicy")
        if raw in ("Delete", "Orphan"):
            return DeletionPolicy(raw)
        return DeletionPolicy.ORPHAN if (spec.get("source") or {}).get("modelId") else DeletionPolicy.DELETE


@dataclass(frozen=True)
class _Found:
    model_id: str
    endpoint: Mapping[str, Any]


def _left_behind(previous: Mapping[str, Any], now: str) -> str | None:
    """A model this resource published before, which a change of source or endpoint leaves in WML (deployments
    may still run from it): said once, in an event, for whoever cleans up."""
    before = previous.get("modelId")
    if not P.published_here(previous) or before == now:
        return None
    where = (previous.get("endpoint") or {}).get("url", "?")
    return (f"model {before} published before on {where} stays in WML (the source or endpoint changed); delete "
            "it there once nothing deploys it")


def _says(status: Mapping[str, Any], kind: str) -> str | None:
    found = next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)
    return str(found.get("reason")) if found and found.get("status") == "True" else None


def _as_before(previous: Mapping[str, Any]) -> P.Result:
    return P.Result(ready=P.published_says(str(previous.get("modelId")), previous.get("versionId"),
                                           previous.get("digest"), adopted=False))


def _create(spec: PublishedModelSpec, name: str, uid: str) -> ModelAssetCreate:
    framework = str(spec.framework.name)
    return ModelAssetCreate(name=name, description=f"PublishedModel {name} {marker(uid)}",
                            framework=Framework(name=FRAMEWORKS.get(framework, framework),
                                                version=spec.framework.version),
                            label_column=spec.label_column, input_data_schema=spec.input_data_schema,
                            label_values=list(spec.label_values) if spec.label_values is not None else None)


def _seen(client: Repository, asset: ModelAsset) -> P.Seen:
    latest = asset.entity.latest_version
    if latest is None:
        return P.Seen(asset.id, None, None)
    version = client.get_model_version(asset.id, latest.guid)
    if version.entity.content_status.state != "persisted":
        return P.Seen(asset.id, None, None)
    return P.Seen(asset.id, version.id, version.entity.content_sha256)


def _marked(client: Repository, uid: str) -> P.Seen | None:
    tag = marker(uid)
    found = next((a for a in client.list_model_assets() if tag in (a.entity.description or "")), None)
    return _seen(client, found) if found is not None else None


def _check_digest(version: ModelVersion, digest: str) -> None:
    stored = version.entity.content_sha256
    if stored is not None and stored != digest:
        raise _Retry(Says("UploadCorrupted", f"WML stored content of SHA-256 {stored}, not {digest}"))


def _refused(exc: E.WMLError) -> Says:
    code = exc.code or type(exc).__name__
    if code == "unsupported_framework":
        return Says("UnsupportedFramework", f"spec.framework.name: {exc}")
    if code == "invalid_input_schema":
        return Says("ModelRefused", f"spec.inputDataSchema: WML refused it ({code}): {exc}")
    if isinstance(exc, E.Unauthorized | E.Forbidden):
        return Says("WMLUnauthorized", f"spec.wml.credentialsSecretRef: WML refused the login: {exc}")
    return Says("ModelRefused", f"spec.source: WML refused the model ({code}): {exc}")
