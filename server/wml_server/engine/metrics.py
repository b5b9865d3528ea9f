"""Prometheus metrics of the stream engine, in a registry of its own (tests run several engines at once)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Batches are up to 500 records at ~20k records/s for VADER: from well under 1 ms to a few tenths of a second.
_SCORING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class EngineMetrics:
    """Counters count records whose transaction committed, so a retried batch is counted once."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ["deployment_id"]
        self.records_in = Counter(
            "wml_stream_records_in", "Input records consumed and committed.", labels, registry=self.registry)
        self.records_out = Counter(
            "wml_stream_records_out", "Output records produced and committed (scored or errored).", labels,
            registry=self.registry)
        self.records_errored = Counter(
            "wml_stream_records_errored", "Output records that carry an `error` instead of a prediction.",
            labels, registry=self.registry)
        self.records_dead_lettered = Counter(
            "wml_stream_records_dead_lettered", "Errored records produced to the dead-letter topic (committed) "
            "instead of the output topic; counted in records_out and records_errored too.", labels,
            registry=self.registry)
        self.transactions_aborted = Counter(
            "wml_stream_transactions_aborted", "Transactions aborted and retried from the committed offsets.",
            labels, registry=self.registry)
        self.consumer_lag = Gauge(
            "wml_stream_consumer_lag", "Records on the input topic not yet consumed (high watermark minus "
            "position, summed over partitions; refreshed every few seconds).", labels, registry=self.registry)
        self.scoring_seconds = Histogram(
            "wml_stream_scoring_seconds", "Seconds to score one batch (parse, model, serialize), all deployments.",
            buckets=_SCORING_BUCKETS, registry=self.registry)
        self.batch_records = Histogram(
            "wml_stream_batch_records", "Records per scored batch, all deployments.",
            buckets=(1, 10, 50, 100, 250, 500, 1000), registry=self.registry)

    def track(self, deployment_id: str) -> None:
        """Makes a deployment's series visible (at 0) from its start, not from its first record."""
        for metric in (self.records_in, self.records_out, self.records_errored, self.records_dead_lettered,
                       self.transactions_aborted):
            metric.labels(deployment_id)

    def committed(self, deployment_id: str, records: int, errored: int, dead_lettered: int = 0) -> None:
        self.records_in.labels(deployment_id).inc(records)
        self.records_out.labels(deployment_id).inc(records)
        self.records_errored.labels(deployment_id).inc(errored)
        self.records_dead_lettered.labels(deployment_id).inc(dead_lettered)

    def scored(self, seconds: float, records: int) -> None:
        self.scoring_seconds.observe(seconds)
        self.batch_records.observe(records)

    def aborted(self, deployment_id: str) -> None:
        self.transactions_aborted.labels(deployment_id).inc()

    def lag(self, deployment_id: str, records: int) -> None:
        self.consumer_lag.labels(deployment_id).set(records)

    def forget(self, deployment_id: str) -> None:
        """Drops a removed deployment's series so 1,000 short-lived deployments do not pile up."""
        for metric in (self.records_in, self.records_out, self.records_errored, self.records_dead_lettered,
                       self.transactions_aborted, self.consumer_lag):
            with contextlib.suppress(KeyError):
                metric.remove(deployment_id)
