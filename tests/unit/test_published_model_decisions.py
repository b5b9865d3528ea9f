"""PublishedModel's pure decisions (wml_operator.published.publish) as tables, and the spec's rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from wml_operator.published import publish as P
from wml_operator.published.source import SourceError, from_config_map, shown, to_file
from wml_operator.published.spec import parse_spec
from wml_operator.spec import DeletionPolicy

D1, D2 = "a" * 64, "b" * 64
EP = {"url": "http://wml", "instanceId": "i1"}
OTHER = {"url": "http://other", "instanceId": "i1"}


def spec(**source: Any) -> Any:
    return parse_spec({"framework": {"name": "scikit-learn"}, "source": source or {"url": {"url": "http://x/m"}}})


PINNED = spec(url={"url": "http://x/m", "sha256": D1})
UNPINNED = spec(url={"url": "http://x/m"})
CM = spec(configMapRef={"name": "cm", "key": "model"})
META = P.meta_hash(PINNED)


def published(digest: str = D1, endpoint: dict[str, str] = EP, meta: str | None = META) -> dict[str, Any]:
    out = {"modelId": "m1", "versionId": "v1", "digest": digest, "endpoint": endpoint}
    return {**out, "metaHash": meta} if meta else out


@pytest.mark.parametrize(("case", "the_spec", "status", "digest", "marked", "expected"), [
    ("first publish", PINNED, {}, D1, None, P.Decision(P.Do.PUBLISH)),
    ("digest as pinned, already there", PINNED, published(), D1, None, P.Decision(P.Do.NOTHING, "m1")),
    ("new content", UNPINNED, published(), D2, None, P.Decision(P.Do.NEW_VERSION, "m1")),
    ("same content, unpinned", UNPINNED, published(), D1, None, P.Decision(P.Do.NOTHING, "m1")),
    ("crash after POST: found, same content", PINNED, {}, D1, P.Seen("m9", "v9", D1),
     P.Decision(P.Do.ADOPT, "m9")),
    ("crash after POST: found without content", PINNED, {}, D1, P.Seen("m9", None, None),
     P.Decision(P.Do.NEW_VERSION, "m9")),
    ("another endpoint: publish there", UNPINNED, published(endpoint=OTHER), D1, None, P.Decision(P.Do.PUBLISH)),
])
def test_decide(case: str, the_spec: Any, status: dict[str, Any], digest: str, marked: P.Seen | None,
                expected: P.Decision) -> None:
    assert P.decide(the_spec, status, EP, digest, marked) == expected, case


def test_decide_refuses_a_digest_mismatch_and_metadata_changes() -> None:
    mismatch = P.decide(PINNED, {}, EP, D2, None)
    assert mismatch.stalled is not None
    assert mismatch.stalled.reason == "DigestMismatch"
    assert "spec.source.url.sha256" in mismatch.stalled.message
    changed = P.decide(UNPINNED, published(meta="0" * 16), EP, D2, None)
    assert changed.stalled is not None
    assert changed.stalled.reason == "ImmutableMetadata"


@pytest.mark.parametrize(("case", "the_spec", "status", "expected"), [
    ("pinned and published here", PINNED, published(), False),
    ("pinned, other digest published", PINNED, published(D2), True),
    ("pinned, another endpoint", PINNED, published(endpoint=OTHER), True),
    ("unpinned always looks", UNPINNED, published(), True),
    ("config map always looks", CM, published(), True),
    ("nothing published yet", PINNED, {}, True),
])
def test_needs_fetch(case: str, the_spec: Any, status: dict[str, Any], expected: bool) -> None:
    assert P.needs_fetch(the_spec, status, EP) is expected, case


def body(generation: int = 1, observed: int | None = 1, checked: str | None = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": observed}
    if checked:
        status["lastCheckTime"] = checked
    return {"metadata": {"uid": "u", "generation": generation}, "status": status}


T0 = 1767225600.0  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(("case", "the_body", "the_spec", "retry_at", "now", "expected"), [
    ("backoff not over", body(), UNPINNED, T0 + 10, T0 + 5, False),
    ("backoff over", body(), PINNED, T0 + 10, T0 + 11, True),
    ("spec not observed", body(generation=2), PINNED, None, T0, True),
    ("pinned: never on a timer", body(), PINNED, None, T0 + 10_000, False),
    ("unpinned, interval not passed", body(), UNPINNED, None, T0 + 299, False),
    ("unpinned, interval passed", body(), UNPINNED, None, T0 + 300, True),
    ("config map, never checked", body(checked=None), CM, None, T0, True),
])
def test_due(case: str, the_body: dict[str, Any], the_spec: Any, retry_at: float | None, now: float,
             expected: bool) -> None:
    assert P.due(the_body, the_spec, retry_at, now) is expected, case


def test_retry_delay_grows_and_is_bounded() -> None:
    assert [P.retry_delay(n, 0.5) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert P.retry_delay(30, 0.5) == P.RETRY_MAX_SECONDS


def sdep(name: str, ref: str | None) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"modelRef": {"name": ref}} if ref else {"modelId": "x"}}


def test_holders_are_the_deployments_naming_it() -> None:
    items = [sdep("b", "m"), sdep("a", "m"), sdep("c", "other"), sdep("d", None)]
    assert P.holders(items, "m") == ["a", "b"]
    assert P.holders(items, "nobody") == []
    assert "a, b" in P.held_says(["a", "b"]).message


def model_body(ready: str = "True", reason: str = "Published", observed: int = 3, stalled: bool = False,
               **status: Any) -> dict[str, Any]:
    conds = [{"type": "Ready", "status": ready, "reason": reason, "message": "why"}]
    if stalled:
        conds.append({"type": "Stalled", "status": "True", "reason": reason, "message": "why"})
    return {"metadata": {"name": "pm", "generation": 3},
            "status": {"observedGeneration": observed, "conditions": conds,
                       **({"modelId": "m", "versionId": "v", "digest": D1} | status)}}


@pytest.mark.parametrize(("case", "the_body", "expected"), [
    ("ready", model_body(), ("m", "v", D1)),
    ("stalled", model_body("False", "DigestMismatch", stalled=True),
     "PublishedModel pm is not Ready: DigestMismatch: why"),
    ("older generation", model_body(observed=2), "PublishedModel pm is not Ready: not yet published at generation 3"),
    ("no status", {"metadata": {"name": "pm", "generation": 1}},
     "PublishedModel pm is not Ready: not yet published at generation 1"),
    ("no version", model_body(versionId=None), "PublishedModel pm is not Ready: no model version recorded"),
])
def test_ready_model(case: str, the_body: dict[str, Any], expected: Any) -> None:
    assert P.ready_model(the_body) == expected, case


def test_status_keeps_ready_while_retrying_and_sets_the_short_digest() -> None:
    first = P.status_of({}, 1, P.Result(ready=P.published_says("m", "v", D1, adopted=False),
                                        fields={"modelId": "m", "versionId": "v", "digest": D1}), "t0")
    assert first["digestShort"] == D1[:12]
    assert first["observedGeneration"] == 1
    assert first["conditions"][0]["reason"] == "Published"
    assert "model m version v" in first["message"]
    retrying = P.status_of(first, 1, P.Result(reconciling=P.Says("WMLUnavailable", "down")), "t1")
    kinds = {c["type"]: (c["status"], c["reason"]) for c in retrying["conditions"]}
    assert kinds == {"Ready": ("True", "Published"), "Reconciling": ("True", "WMLUnavailable")}
    stalled = P.status_of(first, 2, P.Result(stalled=P.Says("DigestMismatch", "no")), "t2")
    kinds = {c["type"]: (c["status"], c["reason"]) for c in stalled["conditions"]}
    assert kinds == {"Ready": ("False", "DigestMismatch"), "Stalled": ("True", "DigestMismatch")}


@pytest.mark.parametrize(("source", "policy"), [
    ({"url": {"url": "http://x/m"}}, DeletionPolicy.DELETE),
    ({"modelId": "m1"}, DeletionPolicy.ORPHAN),
])
def test_deletion_policy_defaults(source: dict[str, Any], policy: DeletionPolicy) -> None:
    assert spec(**source).policy is policy


@pytest.mark.parametrize("source", [
    {}, {"url": {"url": "http://x/m"}, "modelId": "m"},
    {"configMapRef": {"name": "c", "key": "k"}, "modelId": "m"},
    {"url": {"url": "ftp://x/m"}}, {"url": {"url": "http://x/m", "sha256": "ABC"}},
])
def test_spec_refuses_bad_sources(source: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_spec({"framework": {"name": "scikit-learn"}, "source": source})


def test_spec_refuses_an_unknown_framework() -> None:
    with pytest.raises(ValidationError):
        parse_spec({"framework": {"name": "tensorflow"}, "source": {"modelId": "m"}})


def test_to_file_hashes_and_refuses_past_the_limit(tmp_path: Any) -> None:
    path, digest, size = to_file([b"ab", b"c"], 3, "f", str(tmp_path))
    assert (path.read_bytes(), size) == (b"abc", 3)
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    path.unlink()
    with pytest.raises(SourceError) as err:
        to_file([b"ab", b"cd"], 3, "spec.source.url.url", str(tmp_path))
    assert err.value.reason == "ModelTooLarge"
    assert list(tmp_path.iterdir()) == []


def test_config_map_sources(tmp_path: Any) -> None:
    got = from_config_map({"binaryData": {"m": "YWJj"}}, "ns", "cm", "m", 10, str(tmp_path))
    assert got.path is not None
    assert got.path.read_bytes() == b"abc"
    got.discard()
    assert from_config_map({"data": {"m": "abc"}}, "ns", "cm", "m", 10, str(tmp_path)).digest == \
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    for config_map, reason in ((None, "ConfigMapNotFound"), ({"data": {"x": "1"}}, "ConfigMapKeyMissing")):
        with pytest.raises(SourceError) as err:
            from_config_map(config_map, "ns", "cm", "m", 10, str(tmp_path))
        assert err.value.reason == reason
        assert "spec.source.configMapRef" in err.value.message


def test_messages_show_no_query() -> None:
    assert shown("https://h:8443/a/m.pkl?token=secret") == "https://h:8443/a/m.pkl"
