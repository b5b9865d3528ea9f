"""Prometheus metrics of the operator: reconciles, errors by reason, WML requests, resources by status.

One `Metrics` per operator, with a registry of its own, made at start-up (tests make their own).
"""

from __future__ import annotations

import contextlib
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

STATUSES = ("INITIALIZING", "RUNNING", "STOPPED", "FAILED", "NONE")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter("wml_operator_reconciles", "Reconcile passes, by trigger and result",
                                  ["trigger", "result"], registry=self.registry)
        self.errors = Counter("wml_operator_errors", "Reconcile errors by condition reason", ["reason"],
                              registry=self.registry)
        self.wml_requests = Histogram("wml_operator_wml_request_seconds", "WML API request latency",
                                      ["method", "path", "code"], registry=self.registry,
                                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.resources = Gauge("wml_operator_resources", "StreamingDeployments by WML status", ["wml_status"],
                               registry=self.registry)
        self.stream_lag = Gauge("wml_operator_stream_lag", "Records of the input topic a resource's stream has not "
                                "read yet, as WML last reported", ["namespace", "name"], registry=self.registry)
        self.status_writes = Counter("wml_operator_status_writes", "Status patches written", registry=self.registry)
        self.secret_reads = Counter("wml_operator_secret_reads", "Secrets read by name (the referenced ones, once "
                                    "and after each change)", registry=self.registry)
        self.secret_events = Counter("wml_operator_secret_events", "Secrets' metadata seen by the watch (listed, "
                                     "added, modified, deleted), referenced or not", registry=self.registry)
        self.secrets_held = Gauge("wml_operator_secrets_held", "Secrets whose data the operator holds",
                                  registry=self.registry)
        self._counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        self._lock = threading.Lock()  # passes report from many threads at once
        for label in STATUSES:
            self.resources.labels(label).set(0)

    def observe_request(self, method: str, path: str, status: int | None, seconds: float) -> None:
        self.wml_requests.labels(method, path, str(status) if status is not None else "error").observe(seconds)

    def status_changed(self, old: str | None, new: str | None) -> None:
        """One resource's WML status went from `old` to `new` (None: not counted): counted as it changes, not
        recounted over every resource, so a pass costs the same at 1,000 resources."""
        with self._lock:
            for label, change in ((old, -1), (new, 1)):
                if label is not None:
                    self._counts[label] = self._counts.get(label, 0) + change
                    self.resources.labels(label).set(self._counts[label])

    def set_lag(self, namespace: str, name: str, lag: int | None) -> None:
        """None: WML reports none (or the resource is gone): the series goes, so deleted resources leave none."""
        if lag is not None:
            self.stream_lag.labels(namespace, name).set(lag)
            return
        with contextlib.suppress(KeyError):
            self.stream_lag.remove(namespace, name)

    def serve(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
