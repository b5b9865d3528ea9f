"""kube.SecretStore, fed by the metadata-only watch: what it holds, what it drops, whom it wakes, and reads that
race with a change (issue 15)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from wml_operator.kube import SecretStore, watched
from wml_operator.login_copies import _content
from wml_operator.resources import Resources


class API:
    """read_namespaced_secret over a dict, with a hook that runs while a read is under way."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}
        self.during: Callable[[], None] | None = None
        self.reads = 0

    def read_namespaced_secret(self, name: str, namespace: str) -> k8s.V1Secret:
        self.reads += 1
        version, data = self.data[(namespace, name)]
        if self.during is not None:
            hook, self.during = self.during, None
            hook()
        return k8s.V1Secret(metadata=k8s.V1ObjectMeta(resource_version=version),
                            data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()})


def store_of(api: API, wanted: set[tuple[str, str]] | None = None) -> tuple[SecretStore, list[tuple[str, str]]]:
    store = SecretStore(api)  # type: ignore[arg-type]
    woken: list[tuple[str, str]] = []
    store.wanted = lambda ns, name: (ns, name) in (wanted or set())
    store.wake = lambda ns, name: woken.append((ns, name))
    return store, woken


def test_a_change_during_a_read_is_not_hidden_by_the_read() -> None:
    """The read got the old data while the new version's event arrived: it is returned, not kept, so the pass the
    event wakes reads again. Also for a Secret no resource's spec names (the operator's default credentials)."""
    api = API()
    api.data[("ops", "wml")] = ("1", {"password": "old"})
    store, _ = store_of(api)
    api.during = lambda: store.event("MODIFIED", "ops", "wml", "2")
    assert store.read("ops", "wml") == {"password": "old"}
    api.data[("ops", "wml")] = ("2", {"password": "new"})
    assert store.read("ops", "wml") == {"password": "new"}
    assert store.read("ops", "wml") == {"password": "new"}
    assert api.reads == 2


def test_a_held_secret_goes_when_its_version_moves_and_its_users_are_woken() -> None:
    api = API()
    api.data[("team", "kafka")] = ("5", {"user": "u"})
    store, woken = store_of(api, {("team", "kafka")})
    store.read("team", "kafka")
    store.event("MODIFIED", "team", "kafka", "5")  # the same version (a list again): nothing
    assert (store.held(), woken) == (1, [])
    store.event("MODIFIED", "team", "kafka", "6")
    assert (store.held(), woken) == (0, [("team", "kafka")])
    store.event("ADDED", "team", "helm-release", "7")  # nobody's: not read, nobody woken
    assert (store.held(), woken, api.reads) == (0, [("team", "kafka")], 1)


def test_without_a_watch_in_place_nothing_held_is_trusted() -> None:
    api = API()
    api.data[("team", "kafka")] = ("5", {"user": "u"})
    store, _ = store_of(api)
    store.watching = lambda namespace: False  # refused (403), or listing again
    store.read("team", "kafka")
    store.read("team", "kafka")
    assert (api.reads, store.held()) == (2, 0)


def test_a_list_drops_what_it_no_longer_shows_in_its_scope_only() -> None:
    api = API()
    api.data[("a", "s")] = ("1", {"k": "v"})
    api.data[("b", "s")] = ("1", {"k": "v"})
    store, woken = store_of(api, {("a", "s")})
    store.read("a", "s")
    store.read("b", "s")
    store.listing("a")
    store.listed("a")  # "a" listed without its Secret: deleted while no watch ran
    assert (store.held(), woken) == (1, [("a", "s")])


def test_resources_without_their_own_wml_credentials_reference_the_default() -> None:
    resources = Resources(5.0, 30.0, default_secret=("ops", "wml-default"))
    spec: dict[str, Any] = {"modelId": "m", "sparkCredentialsSecretRef": {"name": "spark", "key": "c"},
                            "input": {"topic": "i", "connectionSecretRef": {"name": "kafka"}},
                            "output": {"topic": "o", "connectionSecretRef": {"name": "kafka"}}}
    resources.track("ADDED", {"metadata": {"uid": "u1", "namespace": "team", "generation": 1}, "spec": spec})
    own = {**spec, "wml": {"credentialsSecretRef": {"name": "wml"}}}
    resources.track("ADDED", {"metadata": {"uid": "u2", "namespace": "team", "generation": 1}, "spec": own})
    assert resources.users_of("ops", "wml-default") == ["u1"]
    assert resources.users_of("team", "wml") == ["u2"]


def test_namespaces_match_as_kopf_reads_them() -> None:
    assert watched("team-b", ())
    assert watched("team-b", ("team-*",))
    assert not watched("other", ("team-*",))
    assert watched("team-a", ("!team-b",))  # a leading exclusion implies every other namespace
    assert not watched("team-b", ("!team-b",))


def test_a_copy_that_does_not_decode_holds_nothing() -> None:
    assert _content(base64.b64encode(b"\xff\xfe").decode()) == "[]"
    assert _content("not base64 !") == "[]"
    assert _content(None) == "[]"


def test_the_private_key_of_a_tls_secret_is_not_held() -> None:
    """The default CA comes from the service's kubernetes.io/tls Secret: its ca.crt is read, its tls.key never kept."""
    api = API()
    api.data[("wml-system", "wml-server-tls")] = ("1", {"ca.crt": "CA", "tls.crt": "CERT", "tls.key": "KEY"})
    original = api.read_namespaced_secret

    def typed(name: str, namespace: str) -> k8s.V1Secret:
        secret = original(name, namespace)
        secret.type = "kubernetes.io/tls"
        return secret

    api.read_namespaced_secret = typed  # type: ignore[method-assign]
    store, _ = store_of(api)
    assert store.read("wml-system", "wml-server-tls") == {"ca.crt": "CA", "tls.crt": "CERT"}
    assert store.read("wml-system", "wml-server-tls") == {"ca.crt": "CA", "tls.crt": "CERT"}
    assert api.reads == 1  # the second came from what the store holds, without the key


def test_an_opaque_secret_keeps_a_key_named_tls_key() -> None:
    api = API()
    api.data[("team", "odd")] = ("1", {"tls.key": "value"})
    store, _ = store_of(api)
    assert store.read("team", "odd") == {"tls.key": "value"}
