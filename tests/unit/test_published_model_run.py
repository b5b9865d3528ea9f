"""The PublishedModel pass (wml_operator.published.run) with fakes: generated bad specs end Stalled with a reason
naming the field and make 0 WML calls; a deletion waits while StreamingDeployments reference the model (the
StreamingDeployment CRD has no modelRef on this branch yet, so this is tested here with a fake lister), and
deletes with the kept login once the Secret is gone."""

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


class RecordingSession:
    """requests.Session.get, answering 200 with a body; records each request's headers."""

    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []

    def get(self, url: str, headers: dict[str, str], **_: Any) -> requests.Response:
        self.sent.append(dict(headers))
        response = requests.Response()
        response.status_code = 200
        response.raw = io.BytesIO(b"model bytes")
        return response


@pytest.mark.parametrize(("spec_url", "sha256", "conditional"), [
    ("http://h/a.skops", None, True),  # the same URL, not pinned: ask whether it changed
    ("http://h/b.skops", None, False),  # another URL: its file may be as old as the last one
    ("http://h/a.skops", "0" * 64, False),  # pinned to a digest WML does not have: fetch it
])
def test_a_conditional_request_only_for_the_url_whose_content_wml_has(spec_url: str, sha256: str | None,
                                                                       conditional: bool) -> None:
    session = RecordingSession()
    publisher = Publisher(DictSecrets({}), lambda _ep: None, None, Defaults(), MemoryLogins(),  # type: ignore[arg-type]
                          1 << 20, session=session)  # type: ignore[arg-type]
    spec = parse_model({"framework": {"name": "scikit-learn"},
                        "source": {"url": {"url": spec_url, **({"sha256": sha256} if sha256 else {})}}})
    previous = {"modelId": "m", "digest": "d" * 64, "sourceUrl": "http://h/a.skops",
                "lastModified": "Thu, 03 Dec 2026 18:00:00 GMT"}
    fetched = publisher._fetch("ns", spec, previous, {})
    fetched.discard()
    assert ("If-Modified-Since" in session.sent[0]) is conditional
