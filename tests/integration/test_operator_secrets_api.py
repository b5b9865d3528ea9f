"""The operator's side of Secrets against the real API server: the metadata-only watch (no Secret data ever comes
through it), the store of referenced Secrets, and the copies of deletion logins in the operator's namespace."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from wml_api.credentials import WMLCredentials
from wml_localplatform import KubeInfo
from wml_localplatform.wmloperator import WMLOperator
from wml_operator.kube import SecretStore
from wml_operator.login_copies import PREFIX, LoginNotKept, SecretLogins
from wml_operator.secret_watch import SecretWatch
from wml_operator.secrets import Endpoint

Event = tuple[str, str, str]


class Recorder:
    """A secret_watch.Sink that keeps what it is told, and the store it feeds."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def listing(self, scope: str | None) -> None:
        self.store.listing(scope)

    def event(self, kind: str, namespace: str, name: str, resource_version: str | None) -> None:
        with self.lock:
            self.events.append((kind, namespace, name))
        self.store.event(kind, namespace, name, resource_version)

    def listed(self, scope: str | None) -> None:
        self.store.listed(scope)

    def of(self, name: str) -> list[str]:
        with self.lock:
            return [kind for kind, _, n in self.events if n == name]


def wait(what: str, check: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def secret(name: str, **data: str) -> k8s.V1Secret:
    return k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name), string_data=data)


@pytest.fixture
def watched(k8s_api: k8s.ApiClient, namespace: str) -> Iterator[tuple[Recorder, SecretWatch, set[tuple[str, str]]]]:
    core = k8s.CoreV1Api(k8s_api)
    referenced: set[tuple[str, str]] = set()
    store = SecretStore(core)
    store.wanted = lambda ns, name: (ns, name) in referenced
    recorder = Recorder(store)
    watch = SecretWatch(core, recorder, [namespace], page=2, watch_seconds=5)
    watch.start()
    try:
        assert watch.synced.wait(20)
        yield recorder, watch, referenced
    finally:
        watch.stop()


def test_the_watch_sees_changes_by_name_and_reads_only_referenced_secrets(
        k8s_api: k8s.ApiClient, namespace: str, watched: tuple[Recorder, SecretWatch, set[tuple[str, str]]]) -> None:
    recorder, _, referenced = watched
    core = k8s.CoreV1Api(k8s_api)
    store = recorder.store
    woken: list[tuple[str, str]] = []
    store.wake = lambda ns, name: woken.append((ns, name))
    referenced.add((namespace, "wml"))
    core.create_namespaced_secret(namespace, secret("wml", username="u", password="first"))
    for i in range(5):  # unrelated: seen by name, never read
        core.create_namespaced_secret(namespace, secret(f"helm-{i}", release="x" * 1000))
    wait("the unrelated Secrets' events", lambda: all(recorder.of(f"helm-{i}") for i in range(5)))
    assert (namespace, "wml") in woken  # a referenced Secret appeared: what a Stalled resource waits for
    assert store.read(namespace, "wml") == {"username": "u", "password": "first"}
    reads = store.api_reads
    assert store.read(namespace, "wml") == {"username": "u", "password": "first"}
    assert store.api_reads == reads  # held: no second read
    woken.clear()
    core.patch_namespaced_secret("wml", namespace, {"stringData": {"password": "second"}})
    wait("the rotation to wake the resource", lambda: (namespace, "wml") in woken)
    assert store.read(namespace, "wml") == {"username": "u", "password": "second"}
    for i in range(5):
        core.patch_namespaced_secret(f"helm-{i}", namespace, {"stringData": {"release": "y"}})
    wait("the unrelated updates", lambda: all(recorder.of(f"helm-{i}").count("MODIFIED") for i in range(5)))
    assert store.api_reads == reads + 1  # only the rotated one was read again
    assert store.held() == 1
    core.delete_namespaced_secret("wml", namespace)
    wait("the deletion", lambda: store.held() == 0)
    assert store.read(namespace, "wml") is None


def test_a_list_after_a_gap_drops_what_was_deleted_meanwhile(
        k8s_api: k8s.ApiClient, namespace: str, watched: tuple[Recorder, SecretWatch, set[tuple[str, str]]]) -> None:
    recorder, _, referenced = watched
    core = k8s.CoreV1Api(k8s_api)
    store = recorder.store
    core.create_namespaced_secret(namespace, secret("kafka", user="u"))
    core.create_namespaced_secret(namespace, secret("other", user="u"))
    referenced.add((namespace, "kafka"))
    assert store.read(namespace, "kafka") == {"user": "u"}
    # What a relist after 410 Gone does, when the Secret went while no watch ran: the list no longer shows it.
    store.listing(namespace)
    store.event("LISTED", namespace, "other", "1")
    store.listed(namespace)
    assert store.held() == 0


def test_copies_of_logins_are_kept_read_back_swept_and_dropped(k8s_api: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(k8s_api)
    logins = SecretLogins(namespace, core)
    a = Endpoint("http://a.test", "i1", WMLCredentials("u", "p1"), credentials_secret="team/wml")
    b = Endpoint("https://b.test", "i2", WMLCredentials("u", "p2"), "-----BEGIN CERTIFICATE-----\nx\n",
                 credentials_secret="team/wml2", ca_secret="ca/ca.crt")
    live, gone = str(uuid.uuid4()), str(uuid.uuid4())
    logins.keep(live, "team/one", [a])
    logins.keep(live, "team/one", [a])  # unchanged: no write
    assert logins.writes == 1
    logins.keep(live, "team/one", [b, a, b])  # a move: both, once each
    logins.keep(gone, "team/two", [a])
    assert logins.writes == 3
    stored = core.read_namespaced_secret(PREFIX + live, namespace)
    assert stored.metadata.labels["app.kubernetes.io/managed-by"] == "wml-stream-operator"
    assert stored.metadata.annotations["wmlstream.dev/resource"] == "team/one"

    restarted = SecretLogins(namespace, core)  # a new process: the copies are all it has
    assert restarted.load() == {live: "team/one", gone: "team/two"}
    kept = restarted.kept(live)
    assert [(ep.url, ep.credentials.password, ep.ca_pem) for ep in kept] == \
        [("https://b.test", "p2", b.ca_pem), ("http://a.test", "p1", None)]
    assert (kept[0].credentials_secret, kept[0].ca_secret) == ("team/wml2", "ca/ca.crt")
    assert restarted.sweep(lambda: {live}, lambda ns: ns == "team") == [gone]
    assert restarted.kept(gone) == ()
    restarted.drop(live)
    restarted.drop(live)  # gone already: fine
    assert SecretLogins(namespace, core).load() == {}


def test_a_copy_that_cannot_be_written_says_why_without_the_login(k8s_api: k8s.ApiClient) -> None:
    logins = SecretLogins(f"wso-absent-{uuid.uuid4().hex[:8]}", k8s.CoreV1Api(k8s_api))
    with pytest.raises(LoginNotKept) as refused:
        logins.keep("uid-1", "team/one", [Endpoint("http://a.test", "i1", WMLCredentials("u", "hunter22"))])
    assert "404" in str(refused.value)
    assert "hunter22" not in str(refused.value)


def test_stop_wakes_a_thread_blocked_in_a_long_watch(k8s_api: k8s.ApiClient, namespace: str) -> None:
    """A stop must not wait for the watch's own timeout: the operator's SIGTERM ran into it and was SIGKILLed."""
    core = k8s.CoreV1Api(k8s_api)
    watch = SecretWatch(core, Recorder(SecretStore(core)), [namespace], watch_seconds=280)
    watch.start()
    assert watch.synced.wait(20)
    time.sleep(1.0)  # the thread is inside the watch's blocking read now
    stopper = threading.Thread(target=watch.stop, kwargs={"timeout": 10.0}, daemon=True)
    stopper.start()
    stopper.join(30)
    assert not stopper.is_alive(), "stop() is still waiting on the watch"
    assert not any(thread.is_alive() for thread in watch._threads)


def test_the_operator_stops_on_sigterm_and_runs_its_cleanup(kube: KubeInfo, tmp_path: Path) -> None:
    """SIGTERM (a pod's deletion, a roll-out) ends the process by itself, its cleanup activity done: not the
    SIGKILL at the end of the grace period."""
    operator = WMLOperator(tmp_path / "operator", Path(kube.kubeconfig),
                           env={"WML_OPERATOR_NAMESPACES": "wso-stop-*", "WML_OPERATOR_LOG_FORMAT": "json"})
    operator.start()
    time.sleep(2.0)  # its Secret watch is reading by now
    entry = operator.pid_file.read_text().split()
    pid = int(entry[0])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:
            pass
        time.sleep(0.1)
    alive = Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()
    operator.stop()
    assert not alive, "the operator did not stop on SIGTERM"
    assert "Activity 'stop_polling' succeeded." in operator.text()
