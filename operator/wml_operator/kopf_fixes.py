"""One correction to kopf (pinned in pyproject.toml), made when wml_operator.handlers is imported.

kopf, when told which namespaces to serve (WML_OPERATOR_NAMESPACES), serves a namespace only once its namespace
watch has shown it and it is not being deleted. A namespace marked for deletion whose content is still there is
left as it was: served if kopf served it already, never served if not. So an operator that starts while such a
namespace terminates (it was down, or restarting, when `kubectl delete namespace` ran) never sees the
StreamingDeployments there: their finalizer stays, the namespace stays Terminating for good, their streams run on.
Here a namespace counts as deleted only once it is gone (its DELETED event): until then its content, ours
included, may still need its finalizers run.
"""

from __future__ import annotations

from typing import Any

from kopf._core.reactor import observation


def _deleted(raw_event: Any) -> bool:
    return bool(raw_event["type"] == "DELETED")


def serve_terminating_namespaces() -> None:
    if not callable(getattr(observation, "is_deleted", None)):  # kopf changed: fail at start, not at a deletion
        raise RuntimeError("kopf._core.reactor.observation.is_deleted is gone: wml_operator.kopf_fixes needs a look")
    observation.is_deleted = _deleted
