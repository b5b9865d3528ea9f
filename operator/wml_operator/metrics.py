"""Prometheus metrics of the operator: reconciles, errors by reason, WML requests, resources by status."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()
RECONCILES = Counter("wml_operator_reconciles", "Reconcile passes, by trigger and result", ["trigger", "result"],
                     registry=REGISTRY)
ERRORS = Counter("wml_operator_errors", "Reconcile errors by condition reason", ["reason"], registry=REGISTRY)
WML_REQUESTS = Histogram("wml_operator_wml_request_seconds", "WML API request latency",
                         ["method", "path", "code"], registry=REGISTRY,
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RESOURCES = Gauge("wml_operator_resources", "StreamingDeployments by WML status", ["wml_status"], registry=REGISTRY)
STATUS_WRITES = Counter("wml_operator_status_writes", "Status patches written", registry=REGISTRY)

_statuses: dict[str, str] = {}  # per resource UID
_counts: dict[str, int] = {}  # per WML status: what RESOURCES shows
_lock = threading.Lock()  # handlers call set_resource_status from many threads at once
for _label in ("INITIALIZING", "RUNNING", "STOPPED", "FAILED", "NONE"):
    RESOURCES.labels(_label).set(0)


def observe_request(method: str, path: str, status: int | None, seconds: float) -> None:
    WML_REQUESTS.labels(method, path, str(status) if status is not None else "error").observe(seconds)


def set_resource_status(uid: str, status: str | None) -> None:
    """Counted as it changes, not recounted over every resource: a pass costs the same at 1,000 resources."""
    with _lock:
        old = _statuses.pop(uid, None) if status is None else _statuses.get(uid)
        if old == status:
            return
        if status is not None:
            _statuses[uid] = status
        for label, change in ((old, -1), (status, 1)):
            if label is not None:
                _counts[label] = _counts.get(label, 0) + change
                RESOURCES.labels(label).set(_counts[label])


def serve(address: str) -> None:
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1", registry=REGISTRY)
