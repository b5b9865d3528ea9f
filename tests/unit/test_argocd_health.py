"""The Argo CD health check (deploy/argocd/health.lua), run as Argo CD runs it.

Argo CD evaluates health scripts with gopher-lua (Lua 5.1): the live object is the global `obj` and the script
returns a table `{status = ..., message = ...}`. Here the script runs on Lua 5.1 (lupa's `lua51` module) in a
sandbox that holds only `obj` and part of the standard library Argo CD opens, so a script that works here
touches nothing Argo CD lacks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa.lua51 import LuaRuntime

REPO = Path(__file__).resolve().parents[2]
HEALTH_LUA = REPO / "deploy" / "argocd" / "health.lua"
ARGOCD_DOC = REPO / "docs" / "gitops" / "argocd.md"
HEALTH_KEY = "resource.customizations.health.wmlstream.dev_StreamingDeployment"
ARGO_HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

# Loads the script as a chunk whose only globals are `obj` and a few safe library tables, then runs it.
SANDBOX = """
return function(source, obj)
  local chunk, err = loadstring(source, "=health.lua")
  if chunk == nil then
    error(err)
  end
  setfenv(chunk, {
    obj = obj, ipairs = ipairs, pairs = pairs, next = next, select = select, type = type,
    tostring = tostring, tonumber = tonumber, string = string, table = table, math = math,
  })
  return chunk()
end
"""


def to_lua(lua: LuaRuntime, value: Any) -> Any:
    """A Python value as Argo CD hands it to Lua: objects and arrays become tables (arrays 1-based)."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = to_lua(lua, item)
        return table
    return value


@pytest.fixture(scope="module")
def health() -> Callable[[dict[str, Any]], tuple[str, str]]:
    """Runs health.lua on one object; returns (status, message)."""
    source = HEALTH_LUA.read_text()
    lua = LuaRuntime(unpack_returned_tuples=False)
    assert "Lua 5.1" in lua.lua_implementation  # gopher-lua's dialect
    run = lua.execute(SANDBOX)

    def evaluate(obj: dict[str, Any]) -> tuple[str, str]:
        result = run(source, to_lua(lua, obj))
        status, message = result["status"], result["message"]
        assert status in ARGO_HEALTH_STATUSES
        assert isinstance(message, str)
        assert message
        return status, message

    return evaluate


def condition(kind: str, status: str, reason: str, message: str, generation: int = 1) -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-11-27T18:00:00Z", "observedGeneration": generation}


def sdep(*, generation: int = 1, state: str | None = "RUNNING",
         status: dict[str, Any] | None = None) -> dict[str, Any]:
    """A StreamingDeployment as the API server returns it (the sample's spec)."""
    spec: dict[str, Any] = {
        "modelId": "3b1f3d7e-5c1a-4d8e-9b7a-6f0e2c9d4a11",
        "sparkCredentialsSecretRef": {"name": "spark-credentials", "key": "credentials.json"},
        "input": {"topic": "tweets", "connectionSecretRef": {"name": "kafka-connection"}},
        "output": {"topic": "tweet-sentiment", "connectionSecretRef": {"name": "kafka-connection"}},
        "deletionPolicy": "Delete",
        "restartPolicy": "OnFailure",
    }
    if state is not None:
        spec["state"] = state
    obj: dict[str, Any] = {
        "apiVersion": "wmlstream.dev/v1alpha1",
        "kind": "StreamingDeployment",
        "metadata": {"name": "tweet-sentiment", "namespace": "team-a", "generation": generation,
                     "uid": "6f1c2d9e-0a4b-4c3d-9e8f-7a6b5c4d3e2f",
                     "finalizers": ["wmlstream.dev/finalizer"]},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


def observed(generation: int, wml_status: str, conditions: list[dict[str, Any]],
             message: str = "") -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "deploymentId": "d2c5b0f4-1e7a-4b9c-8d3e-2f1a0b9c8d7e",
        "deploymentUrl": "https://wml.example.invalid/v3/wml_instances/i/published_models/m/deployments/d",
        "wmlStatus": wml_status,
        "message": message,
        "restartCount": 0,
        "lastSyncTime": "2026-11-27T18:00:05Z",
        "specHash": "sha256:0f1e2d3c",
        "conditions": conditions,
    }


HealthFn = Callable[[dict[str, Any]], tuple[str, str]]


def test_a_fresh_object_waits_for_the_operator(health: HealthFn) -> None:
    assert health(sdep()) == ("Progressing", "Waiting for the operator")


def test_a_status_without_observed_generation_waits_for_the_operator(health: HealthFn) -> None:
    assert health(sdep(status={})) == ("Progressing", "Waiting for the operator")


def test_observed_generation_behind_waits_even_if_the_old_status_was_ready(health: HealthFn) -> None:
    # The user changed the spec (generation 3); status still describes generation 2, which was Ready.
    status = observed(2, "RUNNING", [condition("Ready", "True", "Running", "Running in WML", 2)])
    assert health(sdep(generation=3, status=status)) == ("Progressing", "Waiting for the operator")


def test_observed_generation_behind_hides_an_old_stall(health: HealthFn) -> None:
    # The stall was about generation 1; the user's fix (generation 2) has not been looked at yet.
    status = observed(1, "", [condition("Ready", "False", "InvalidSpec", "bad", 1),
                              condition("Stalled", "True", "InvalidSpec", "bad", 1)])
    assert health(sdep(generation=2, status=status)) == ("Progressing", "Waiting for the operator")


def test_initializing_is_progressing_with_the_ready_message(health: HealthFn) -> None:
    status = observed(1, "INITIALIZING", [
        condition("Ready", "False", "Initializing", "WML is starting the stream (INITIALIZING)"),
        condition("Reconciling", "True", "Initializing", "WML is starting the stream (INITIALIZING)"),
    ])
    assert health(sdep(status=status)) == ("Progressing", "WML is starting the stream (INITIALIZING)")


def test_stopping_is_progressing_not_suspended(health: HealthFn) -> None:
    # Declared STOPPED, WML still RUNNING: on its way, not yet in the declared state.
    status = observed(2, "RUNNING", [
        condition("Ready", "False", "Stopping", "Stopping the stream", 2),
        condition("Reconciling", "True", "Stopping", "Stopping the stream", 2),
    ])
    assert health(sdep(generation=2, state="STOPPED", status=status)) == ("Progressing", "Stopping the stream")


def test_no_ready_condition_yet_is_progressing(health: HealthFn) -> None:
    assert health(sdep(status=observed(1, "", []))) == ("Progressing", "Waiting for the operator")


def test_ready_and_running_is_healthy(health: HealthFn) -> None:
    status = observed(1, "RUNNING", [
        condition("Ready", "True", "Running", "Deployment d2c5b0f4 is RUNNING"),
        condition("Reconciling", "False", "Running", ""),
        condition("Stalled", "False", "Running", ""),
    ])
    assert health(sdep(status=status)) == ("Healthy", "Deployment d2c5b0f4 is RUNNING")


def test_ready_without_a_message_is_healthy_with_a_default_message(health: HealthFn) -> None:
    status = observed(1, "RUNNING", [condition("Ready", "True", "Running", "")])
    assert health(sdep(status=status)) == ("Healthy", "Running as declared")


def test_ready_with_the_state_defaulted_is_healthy(health: HealthFn) -> None:
    # spec.state left out: the CRD defaults it to RUNNING, but a check must not depend on that.
    status = observed(1, "RUNNING", [condition("Ready", "True", "Running", "Running")])
    assert health(sdep(state=None, status=status)) == ("Healthy", "Running")


def test_stopped_as_declared_is_suspended(health: HealthFn) -> None:
    status = observed(2, "STOPPED", [condition("Ready", "True", "Stopped", "Deployment is STOPPED", 2)])
    assert health(sdep(generation=2, state="STOPPED", status=status)) == ("Suspended", "Stopped as declared")


def test_stalled_is_degraded_with_its_message(health: HealthFn) -> None:
    message = "Secret team-a/kafka-connection has no key 'password'"
    status = observed(1, "", [
        condition("Ready", "False", "SecretInvalid", message),
        condition("Stalled", "True", "SecretInvalid", message),
    ])
    assert health(sdep(status=status)) == ("Degraded", message)


def test_stalled_wins_over_a_ready_condition_that_is_still_true(health: HealthFn) -> None:
    # E.g. rotated credentials rejected by WML while the old deployment still runs.
    status = observed(1, "RUNNING", [
        condition("Ready", "True", "Running", "Running"),
        condition("Stalled", "True", "Unauthorized", "WML rejected the credentials in Secret wml-credentials"),
    ])
    assert health(sdep(status=status)) == ("Degraded", "WML rejected the credentials in Secret wml-credentials")


def test_failed_in_wml_is_degraded_with_wmls_reason(health: HealthFn) -> None:
    status = observed(1, "FAILED", [
        condition("Ready", "False", "Failed", "The stream failed; restarting in 40s"),
        condition("Reconciling", "True", "Restarting", "The stream failed; restarting in 40s"),
    ], message="SASL authentication failed for user 'change-me'")
    assert health(sdep(status=status)) == ("Degraded", "SASL authentication failed for user 'change-me'")


def test_failed_without_a_status_message_uses_the_ready_message(health: HealthFn) -> None:
    status = observed(1, "FAILED", [condition("Ready", "False", "Failed", "The stream FAILED in WML")])
    assert health(sdep(status=status)) == ("Degraded", "The stream FAILED in WML")


def test_failed_without_any_message_still_says_so(health: HealthFn) -> None:
    assert health(sdep(status=observed(1, "FAILED", []))) == ("Degraded", "The WML deployment FAILED")


def test_the_script_is_pure(health: HealthFn) -> None:
    """Same object, same answer: nothing is kept between calls (Argo CD reuses its Lua state)."""
    fresh = sdep()
    stalled = sdep(status=observed(1, "", [condition("Stalled", "True", "InvalidSpec", "modelId is empty")]))
    assert health(stalled) == ("Degraded", "modelId is empty")
    assert health(fresh) == ("Progressing", "Waiting for the operator")
    assert health(stalled) == ("Degraded", "modelId is empty")


def test_the_argocd_doc_inlines_exactly_this_script() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", ARGOCD_DOC.read_text(), flags=re.DOTALL)
    configmaps = [doc for block in blocks for doc in yaml.safe_load_all(block)
                  if isinstance(doc, dict) and doc.get("kind") == "ConfigMap"]
    assert [cm["metadata"]["name"] for cm in configmaps] == ["argocd-cm"]
    assert configmaps[0]["data"][HEALTH_KEY] == HEALTH_LUA.read_text()
    assert configmaps[0]["data"][HEALTH_KEY.replace("StreamingDeployment", "PublishedModel")] == HEALTH_LUA.read_text()


def pmodel(*, generation: int = 1, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """A PublishedModel as the API server returns it: no wmlStatus, no spec.state."""
    obj: dict[str, Any] = {
        "apiVersion": "wmlstream.dev/v1alpha1", "kind": "PublishedModel",
        "metadata": {"name": "tweets", "namespace": "team-a", "generation": generation, "uid": "u"},
        "spec": {"framework": {"name": "scikit-learn"},
                 "source": {"url": {"url": "https://models.example.com/m.skops", "sha256": "a" * 64}}},
    }
    if status is not None:
        obj["status"] = status
    return obj


@pytest.mark.parametrize(("case", "generation", "status", "expected"), [
    ("not seen yet", 1, None, ("Progressing", "Waiting for the operator")),
    ("published", 1, {"observedGeneration": 1, "modelId": "m", "conditions": [
        condition("Ready", "True", "Published", "Published model m version v")]},
     ("Healthy", "Published model m version v")),
    ("adopted", 1, {"observedGeneration": 1, "conditions": [
        condition("Ready", "True", "Adopted", "Adopted model m version v")]},
     ("Healthy", "Adopted model m version v")),
    ("digest mismatch", 1, {"observedGeneration": 1, "conditions": [
        condition("Ready", "False", "DigestMismatch", "sha256 differs"),
        condition("Stalled", "True", "DigestMismatch", "sha256 differs")]}, ("Degraded", "sha256 differs")),
    ("source unreachable, retried", 1, {"observedGeneration": 1, "conditions": [
        condition("Ready", "False", "SourceUnreachable", "cannot get it"),
        condition("Reconciling", "True", "SourceUnreachable", "cannot get it")]}, ("Progressing", "cannot get it")),
    ("deletion waiting", 1, {"observedGeneration": 1, "conditions": [
        condition("Ready", "True", "Published", "Published model m"),
        condition("Reconciling", "True", "DeletionWaiting", "held")]}, ("Healthy", "Published model m")),
    ("generation behind", 2, {"observedGeneration": 1, "conditions": [
        condition("Ready", "True", "Published", "Published model m")]}, ("Progressing", "Waiting for the operator")),
])
def test_published_model_health(health: HealthFn, case: str, generation: int, status: dict[str, Any] | None,
                                expected: tuple[str, str]) -> None:
    assert health(pmodel(generation=generation, status=status)) == expected, case
