"""Prometheus metrics of the operator: reconciles, errors by reason, WML requests, resources by status."""

from __future__ import annotations

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

_statuses: dict[str, str] = {}


def observe_request(method: str, path: str, status: int | None, seconds: float) -> None:
    WML_REQUESTS.labels(method, path, str(status) if status is not None else "error").observe(seconds)


def set_resource_status(uid: str, status: str | None) -> None:
    if status is None:
        _statuses.pop(uid, None)
    else:
        _statuses[uid] = status
    counts: dict[str, int] = {}
    for value in _statuses.values():
        counts[value] = counts.get(value, 0) + 1
    for label in ("INITIALIZING", "RUNNING", "STOPPED", "FAILED", "NONE", *counts):
        RESOURCES.labels(label).set(counts.get(label, 0))


def serve(address: str) -> None:
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1", registry=REGISTRY)
