"""The PublishedModel pass (wml_operator.published.run) with fakes: generated bad specs end Stalled with a reason
naming the field and make 0 WML calls; a deletion waits while StreamingDeployments reference the model, and
deletes with the kept login once the Secret is gone, or by the model's marker when no status names it; a new
source never takes over an adopted model; a retry at a new generation is not Ready; the headers of
headersSecretRef never follow a redirect to another host. tests/integration/test_published_model.py runs the
pass against the real service and apiserver."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Mapping
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import DictSecrets
from wml_api import errors as E
from wml_operator.login_copies import MemoryLogins
from wml_operator.published import publish as P
from wml_operator.published.run import Publisher
from wml_operator.published.spec import parse_spec as parse_model
from wml_operator.secrets import Defaults, Endpoint

SECRET = "S3CRET-header-never-shown"
WML = {"url": "http://wml.invalid", "instance_id": "i1", "username": "u", "password": "p-" + SECRET}
SPEC: dict[str, Any] = {"framework": {"name": "scikit-learn"},
                        "source": {"configMapRef": {"name": "cm", "key": "model"}},
                        "wml": {"credentialsSecretRef": {"name": "wml"}}}
REASONS = {"InvalidSpec", "SecretNotFound", "SecretKeyMissing", "InvalidSecret", "MissingWMLEndpoint",
           "ConfigMapNotFound", "ConfigMapKeyMissing"}


class Calls:
    """A WML client that records every call and has nothing."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.deleted: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            self.calls.append(name)
            if name == "delete_model_asset":
                self.deleted.append(args[0])
                return None
            raise E.Unavailable("no WML here", method="GET", path="/")
        return call


class FakeKube:
    def __init__(self, config_maps: dict[str, Mapping[str, Any]] | None = None,
                 deployments: list[Mapping[str, Any]] | None = None) -> None:
        self.config_maps = config_maps or {}
        self.deployments = deployments or []

    def config_map(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.config_maps.get(name)

    def streaming_deployments(self, namespace: str) -> list[Mapping[str, Any]]:
        return self.deployments


def publisher(secrets: dict[str, dict[str, str]], kube: FakeKube, wml: Calls,
              logins: MemoryLogins | None = None) -> Publisher:
    return Publisher(DictSecrets(secrets), lambda ep: wml, kube, Defaults(), logins or MemoryLogins(), 1 << 20)


def body(spec: Any, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"uid": "u1", "namespace": "ns", "name": "pm", "generation": 1}, "spec": spec,
            "status": status or {}}


SPEC_PATHS = [("framework",), ("framework", "name"), ("framework", "version"), ("source",),
              ("source", "configMapRef"), ("source", "configMapRef", "name"), ("source", "configMapRef", "key"),
              ("source", "url"), ("source", "modelId"), ("wml",), ("wml", "url"), ("deletionPolicy",),
              ("checkIntervalSeconds",), ("labelValues",), ("inputDataSchema",), ("unknown",)]
json_value = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | \
    st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)


@st.composite
def bad_case(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, dict[str, str]], FakeKube]:
    spec, secrets = copy.deepcopy(SPEC), {"wml": dict(WML)}
    kube = FakeKube({"cm": {"data": {"model": "not a model"}}})
    kind = draw(st.sampled_from(["set", "delete", "no-secret", "no-key", "no-configmap", "no-cm-key"]))
    if kind in ("set", "delete"):
        where = draw(st.sampled_from(SPEC_PATHS))
        node: Any = spec
        for part in where[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else node
        if isinstance(node, dict):
            if kind == "set":
                node[where[-1]] = draw(json_value)
            else:
                node.pop(where[-1], None)
    elif kind == "no-secret":
        secrets.clear()
    elif kind == "no-key":
        secrets["wml"].pop(draw(st.sampled_from(["username", "password", "url", "instance_id"])))
    elif kind == "no-configmap":
        kube.config_maps.clear()
    else:
        kube.config_maps["cm"] = {"binaryData": {"other": "YQ=="}}
    return spec, secrets, kube


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad_case())
def test_bad_input_stalls_with_a_reason_and_no_wml_call(case: tuple[dict[str, Any], dict[str, dict[str, str]],
                                                                     FakeKube]) -> None:
    spec, secrets, kube = case
    wml = Calls()
    outcome = publisher(secrets, kube, wml).run(body(spec))
    conds = {c["type"]: c for c in outcome.status["conditions"]}
    assert SECRET not in json.dumps(outcome.status)
    if "Stalled" not in conds:
        # Accepted (a mutation that changed nothing that matters): it then reached WML, which is down here.
        assert outcome.retry_after is not None
        assert wml.calls
        return
    assert conds["Stalled"]["reason"] in REASONS, conds["Stalled"]
    assert "spec" in conds["Stalled"]["message"] or "Secret" in conds["Stalled"]["message"]
    assert wml.calls == []


def test_header_values_never_show() -> None:
    secrets = {"wml": dict(WML), "hdr": {"Authorization": "Bearer " + SECRET}}
    spec = {**SPEC, "source": {"url": {"url": "http://127.0.0.1:9/m?token=" + SECRET,
                                       "headersSecretRef": {"name": "hdr"}}}}
    outcome = publisher(secrets, FakeKube(), Calls()).run(body(spec))
    assert outcome.retry_after is not None  # unreachable: retried
    assert SECRET not in json.dumps(outcome.status)
    assert "SourceUnreachable" in json.dumps(outcome.status)


PUBLISHED = {"modelId": "m1", "versionId": "v1", "digest": "a" * 64,
             "endpoint": {"url": "http://wml.invalid", "instanceId": "i1", "credentialsSecret": "ns/wml"}}


def sdep(name: str, ref: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"modelRef": {"name": ref}}}


def test_deletion_waits_while_streaming_deployments_reference_it() -> None:
    wml = Calls()
    kube = FakeKube(deployments=[sdep("b", "pm"), sdep("a", "pm"), sdep("c", "other")])
    run = publisher({"wml": dict(WML)}, kube, wml)
    outcome = run.delete(body(SPEC, dict(PUBLISHED)))
    assert not outcome.finalized
    assert outcome.retry_after == 5.0
    assert outcome.status["heldBy"] == ["a", "b"]
    reconciling = next(c for c in outcome.status["conditions"] if c["type"] == "Reconciling")
    assert reconciling["reason"] == "DeletionWaiting"
    assert "a, b" in reconciling["message"]
    assert outcome.events[0][1] == "DeletionWaiting"
    assert wml.calls == []
    kube.deployments = [sdep("c", "other")]
    outcome = run.delete(body(SPEC, outcome.status))
    assert outcome.finalized
    assert wml.deleted == ["m1"]


def test_deletion_uses_the_kept_login_when_the_secret_is_gone() -> None:
    wml = Calls()
    logins = MemoryLogins()
    from wml_api.credentials import WMLCredentials

    logins.keep("u1", "ns/pm", [Endpoint("http://wml.invalid", "i1", WMLCredentials("u", "p"),
                                         credentials_secret="ns/wml")])
    outcome = publisher({}, FakeKube(), wml, logins).delete(body(SPEC, dict(PUBLISHED)))
    assert outcome.finalized
    assert wml.deleted == ["m1"]
    nothing_kept = publisher({}, FakeKube(), Calls()).delete(body(SPEC, dict(PUBLISHED)))
    assert not nothing_kept.finalized
    assert "CannotDelete" in json.dumps(nothing_kept.status)


def test_orphan_and_adopted_models_are_left_alone() -> None:
    wml = Calls()
    run = publisher({"wml": dict(WML)}, FakeKube(), wml)
    assert run.delete(body({**SPEC, "deletionPolicy": "Orphan"}, dict(PUBLISHED))).finalized
    assert run.delete(body({**SPEC, "source": {"modelId": "m1"}}, dict(PUBLISHED))).finalized
    assert wml.calls == []


class ListsBothKinds:
    def list_cluster_custom_object(self, group: str, version: str, plural: str, **_: Any) -> dict[str, Any]:
        return {"items": [{"metadata": {"uid": f"uid-of-a-{plural}", "namespace": "ns"}}]}


def test_the_sweep_counts_published_models_as_live() -> None:
    """Otherwise the copies of their deletion logins would be swept while they exist."""
    from wml_operator.app import OperatorApp
    from wml_operator.login_copies import SecretLogins
    from wml_operator.settings import OperatorSettings

    logins = SecretLogins("wml-stream-operator")
    logins.sweep = lambda live, watched: sorted(live())  # type: ignore[method-assign]
    app = OperatorApp.build(OperatorSettings(), secrets=DictSecrets({}), logins=logins)
    app.status.set_api(ListsBothKinds())  # type: ignore[arg-type]
    try:
        assert app.sweep() == ["uid-of-a-publishedmodels", "uid-of-a-streamingdeployments"]
    finally:
        app.close()


def test_handlers_write_into_kopfs_patch_and_hold_the_finalizer() -> None:
    import kopf
    import pytest

    from wml_operator import handlers
    from wml_operator.app import OperatorApp
    from wml_operator.settings import OperatorSettings

    events: list[tuple[str, str, str]] = []
    app = OperatorApp.build(OperatorSettings(), secrets=DictSecrets({}), logins=MemoryLogins(),
                            post_event=lambda body, event: events.append(event))
    kube = FakeKube(deployments=[sdep("uses-it", "pm")])
    app.models = publisher({"wml": dict(WML)}, kube, Calls())
    memo = kopf.Memo()
    memo["app"] = app
    try:
        patch = kopf.Patch()
        raw = body({**SPEC, "source": {"configMapRef": {"name": "absent", "key": "k"}}})
        handlers.reconcile_model(body=kopf.Body(raw), patch=patch, reason="create", memo=memo)  # type: ignore[arg-type]
        assert "ConfigMapNotFound" in json.dumps(patch["status"])
        assert events[-1][1] == "ConfigMapNotFound"
        held = kopf.Patch()
        with pytest.raises(kopf.TemporaryError):
            handlers.delete_model(body=kopf.Body(body(SPEC, dict(PUBLISHED))), patch=held, memo=memo)  # type: ignore[arg-type]
        assert held["status"]["heldBy"] == ["uses-it"]
        kube.deployments = []
        handlers.delete_model(body=kopf.Body(body(SPEC, dict(PUBLISHED))), patch=kopf.Patch(), memo=memo)  # type: ignore[arg-type]
    finally:
        app.close()


class RecordingSession(requests.Session):
    """Session.get answering 200 with a body, without a network; records each request's headers."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, str]] = []

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append(dict(kwargs["headers"]))
        response = requests.Response()
        response.status_code = 200
        response.raw = io.BytesIO(b"model bytes")
        return response


HERE = {"url": "http://wml", "instanceId": "i"}
MODEL_SPEC = {"framework": {"name": "scikit-learn"}, "labelValues": ["NEGATIVE", "POSITIVE"]}


@pytest.mark.parametrize(("spec_url", "sha256", "labels", "where", "conditional"), [
    ("http://h/a.skops", None, None, HERE, True),  # the same URL, not pinned: ask whether it changed
    ("http://h/b.skops", None, None, HERE, False),  # another URL: its file may be as old as the last one
    ("http://h/a.skops", "0" * 64, None, HERE, False),  # pinned to a digest WML does not have: fetch it
    ("http://h/a.skops", None, ["NO", "YES"], HERE, False),  # new metadata: ImmutableMetadata must be seen
    ("http://h/a.skops", None, None, {"url": "http://other", "instanceId": "i"}, False),  # another endpoint
])
def test_a_conditional_request_only_for_the_source_whose_content_wml_has(
        spec_url: str, sha256: str | None, labels: list[str] | None, where: dict[str, str], conditional: bool) -> None:
    session = RecordingSession()
    publisher = Publisher(DictSecrets({}), lambda _ep: None, None, Defaults(), MemoryLogins(),  # type: ignore[arg-type]
                          1 << 20, session=session)
    before = parse_model({**MODEL_SPEC, "source": {"url": {"url": "http://h/a.skops"}}})
    spec = parse_model({**MODEL_SPEC, **({"labelValues": labels} if labels else {}),
                        "source": {"url": {"url": spec_url, **({"sha256": sha256} if sha256 else {})}}})
    previous = {"modelId": "m", "digest": "d" * 64, "metaHash": P.meta_hash(before), "endpoint": HERE,
                "sourceRef": P.source_ref(before, HERE), "lastModified": "Thu, 03 Dec 2026 18:00:00 GMT"}
    fetched = publisher._fetch("ns", spec, previous, {}, where)
    fetched.discard()
    assert ("If-Modified-Since" in session.sent[0]) is conditional


class Repo:
    """A repository with models and versions in memory, as WMLClient's repository methods answer."""

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}  # id -> {description, versions: [(id, sha256)]}
        self.writes: list[str] = []

    def add(self, model_id: str, description: str, *versions: tuple[str, str]) -> None:
        self.models[model_id] = {"description": description, "versions": list(versions)}

    def _asset(self, model_id: str) -> Any:
        from wml_api.repository import ModelAsset

        model = self.models[model_id]
        latest = {"guid": model["versions"][-1][0]} if model["versions"] else None
        return ModelAsset.model_validate({"metadata": {"guid": model_id}, "entity": {
            "name": model_id, "framework": {"name": "scikit-learn"}, "description": model["description"],
            "latest_version": latest}})

    def list_model_assets(self) -> list[Any]:
        return [self._asset(m) for m in self.models]

    def get_model_asset(self, model_id: str) -> Any:
        if model_id not in self.models:
            raise E.NotFound("no such model", method="GET", path="/")
        return self._asset(model_id)

    def get_model_version(self, model_id: str, version_id: str) -> Any:
        from wml_api.repository import ModelVersion

        digest = dict(self.models[model_id]["versions"])[version_id]
        return ModelVersion.model_validate({"metadata": {"guid": version_id}, "entity": {
            "content_status": {"state": "persisted"}, "content_sha256": digest}})

    def publish_model(self, meta: Any, content: Any) -> Any:
        import hashlib

        model_id = f"m{len(self.models) + 1}"
        self.add(model_id, meta.description or "", (f"{model_id}-v1", hashlib.sha256(content.read()).hexdigest()))
        self.writes.append(f"publish {model_id}")
        return self._asset(model_id)

    def add_model_version(self, model_id: str, content: Any) -> Any:
        import hashlib

        version = (f"{model_id}-v{len(self.models[model_id]['versions']) + 1}",
                   hashlib.sha256(content.read()).hexdigest())
        self.models[model_id]["versions"].append(version)
        self.writes.append(f"version {model_id}")
        return self.get_model_version(model_id, version[0])

    def delete_model_asset(self, model_id: str) -> None:
        self.writes.append(f"delete {model_id}")
        self.models.pop(model_id, None)


CONTENT = b"a model's bytes"
CM = FakeKube({"cm": {"data": {"model": CONTENT.decode()}}})


def test_a_new_source_never_takes_over_an_adopted_model() -> None:
    """Adopted first (source.modelId), then a ConfigMap: a model of its own, not a version on the adopted one."""
    repo = Repo()
    repo.add("theirs", "someone else's", ("theirs-v1", "0" * 64))
    run = Publisher(DictSecrets({"wml": dict(WML)}), lambda ep: repo, CM, Defaults(), MemoryLogins(), 1 << 20)
    adopted = run.run(body({**SPEC, "source": {"modelId": "theirs"}})).status
    assert (adopted["modelId"], adopted["versionId"]) == ("theirs", "theirs-v1")
    published = run.run(body(SPEC, adopted)).status
    assert published["modelId"] != "theirs"
    assert repo.writes == [f"publish {published['modelId']}"]
    assert [v for v, _ in repo.models["theirs"]["versions"]] == ["theirs-v1"]


def test_a_deletion_without_a_model_in_the_status_finds_it_by_its_marker() -> None:
    """Published by a pass whose status was never written: the deletion still deletes it."""
    from wml_operator.wml import marker

    repo = Repo()
    repo.add("ours", f"PublishedModel pm {marker('u1')}", ("ours-v1", "1" * 64))
    repo.add("other", "not ours", ("other-v1", "2" * 64))
    run = Publisher(DictSecrets({"wml": dict(WML)}), lambda ep: repo, FakeKube(), Defaults(), MemoryLogins(), 1 << 20)
    outcome = run.delete(body(SPEC, {}))
    assert outcome.finalized
    assert repo.writes == ["delete ours"]


def test_a_retry_at_a_new_generation_is_not_ready() -> None:
    """A new spec whose content cannot be had yet does not report the old content as its own."""
    repo = Repo()
    run = Publisher(DictSecrets({"wml": dict(WML)}), lambda ep: repo, CM, Defaults(), MemoryLogins(), 1 << 20)
    ready = run.run(body(SPEC)).status
    assert _condition(ready, "Ready")["status"] == "True"
    newer = {**body({**SPEC, "source": {"url": {"url": "http://127.0.0.1:9/gone.skops"}}}, ready)}
    newer["metadata"] = {**newer["metadata"], "generation": 2}
    retrying = run.run(newer)
    assert retrying.retry_after is not None
    assert _condition(retrying.status, "Ready")["status"] == "False"
    assert _condition(retrying.status, "Reconciling")["reason"] == "SourceUnreachable"


def _condition(status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


class Redirecting(RecordingSession):
    """Answers the first GET with a redirect to `to`."""

    def __init__(self, to: str) -> None:
        super().__init__()
        self.to = to
        self.urls: list[str] = []

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.urls.append(str(url))
        if len(self.urls) > 1:
            return super().get(url, **kwargs)
        self.sent.append(dict(kwargs["headers"]))
        response = requests.Response()
        response.status_code = 302
        response.headers["Location"] = self.to
        response.raw = io.BytesIO(b"")
        return response


@pytest.mark.parametrize(("to", "kept"), [("/elsewhere.skops", True), ("https://cdn.example/m.skops", False)])
def test_headers_from_the_secret_go_to_the_urls_own_origin_only(to: str, kept: bool) -> None:
    from wml_operator.published.source import fetch_url

    session = Redirecting(to)
    fetched = fetch_url(session, "https://models.example/m.skops", {"X-API-Key": SECRET}, 1 << 20)
    fetched.discard()
    assert ("X-API-Key" in session.sent[1]) is kept
    assert session.sent[0]["X-API-Key"] == SECRET


def test_no_redirect_from_https_down_to_http() -> None:
    from wml_operator.published.source import SourceError, fetch_url

    with pytest.raises(SourceError, match="from https to plain http") as refused:
        fetch_url(Redirecting("http://models.example/m.skops"), "https://models.example/m.skops",
                  {"X-API-Key": SECRET}, 1 << 20)
    assert refused.value.reason == "SourceRefused"
    assert SECRET not in str(refused.value)


def test_downloads_a_killed_operator_left_are_swept_at_start(tmp_path: Any) -> None:
    import os

    from wml_operator.published.source import PREFIX, sweep_leftovers

    old, fresh, other = tmp_path / f"{PREFIX}old", tmp_path / f"{PREFIX}fresh", tmp_path / "someone-elses"
    for path in (old, fresh, other):
        path.write_bytes(b"x")
    os.utime(old, (0, 0))
    os.utime(other, (0, 0))
    assert sweep_leftovers(str(tmp_path)) == 1
    assert not old.exists()
    assert fresh.exists()  # may be a download in progress
    assert other.exists()


def test_every_status_field_a_pass_writes_is_in_the_crd() -> None:
    """The apiserver prunes a status field its schema does not name: kopf then warns of an inconsistent patch and
    the field is lost (a conditional request's validators were, once)."""
    from wml_operator.published.spec import PublishedModelStatus

    declared = {f.alias or name for name, f in PublishedModelStatus.model_fields.items()}
    repo = Repo()
    run = Publisher(DictSecrets({"wml": dict(WML)}), lambda ep: repo, CM, Defaults(), MemoryLogins(), 1 << 20)
    published = run.run(body(SPEC)).status
    adopted = run.run(body({**SPEC, "source": {"modelId": "m1"}}, published)).status
    assert set(published) | set(adopted) <= declared
