"""How a stream runs: batch size, timeouts. One StreamOptions per engine (a service setting)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamOptions:
    batch_size: int = 2000
    """Records per transaction at most; each transaction costs a few broker round trips (~30 ms here), hidden
    behind the next batch's scoring while there is a backlog if the batch scores for longer than that
    (2,000 VADER tweets: ~150 ms). Below the input rate a batch is what arrived during the last commit."""
    batch_timeout: float = 0.1
    """Seconds a caught-up stream waits for the next record before it looks after other things (lag, partitions,
    errors). A record that comes is taken at once, with whatever came with it: batches are what arrived while
    the previous one was being committed."""
    unreachable_timeout: float = 30.0
    """Seconds the brokers may stay unreachable (or a transaction keep failing to commit) before FAILED."""
    attempt_timeout: float = 1.0
    """One metadata or init attempt; also how long a stop may wait on a connecting stream."""
    lag_interval: float = 5.0
    partition_refresh_interval: float = 30.0
    transaction_timeout_ms: int = 60_000
    """How long the broker keeps a transaction of a vanished process open before aborting it."""
    max_consecutive_aborts: int = 5
    scoring_workers: int = 0
    """Worker processes that score a built-in model's stream, each a part of every batch (of 64 records or
    more); 0 scores in the service's own process. The service's setting WML_SERVER_SCORING_WORKERS
    defaults to the cores it may use. Users' models always score in their own sandboxed worker."""
    exactly_once: bool = True
    """False is for measuring what exactly-once costs (bench/stream_throughput.py --eos off), nothing else:
    a plain (idempotent, non-transactional) producer, and the consumer commits a batch's offsets once its
    records are delivered, so records may come out twice after a crash (at least once). Not a setting of
    the REST API or of the service: deployments always run exactly once."""
