"""What a deployment leaves on the brokers, and how it is taken away (on delete) or made harmless (on FAILED).

- The consumer group `wml-<id>` on the input brokers holds the deployment's committed offsets: deleted with the
  deployment (GROUP_ID_NOT_FOUND counts as done; NON_EMPTY_GROUP, a member still leaving, is retried).
- The transactional id `wml-<id>` on the output brokers: a producer that ended without aborting (a runner that
  FAILED closes with purge, no abort) leaves its transaction open, and every read_committed reader of the
  output topic waits behind it until transaction.timeout.ms. A fresh producer with the same transactional id
  calling init_transactions fences it and aborts that transaction at once. The id itself cannot be deleted
  by any Kafka admin API: the broker forgets it after transactional.id.expiration.ms (7 days by default).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from wml_server.engine.clients import LibrdkafkaLog, ProducerLike, producer_config
from wml_server.engine.failures import redact
from wml_server.engine.spec import KafkaTopic, StreamSpec

log = logging.getLogger(__name__)

_GONE = (KafkaError.GROUP_ID_NOT_FOUND,)
_BUSY = (KafkaError.NON_EMPTY_GROUP, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_COORDINATOR,
         KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT)


def _config(ref: KafkaTopic, client_id: str) -> dict[str, Any]:
    return {**ref.connection.to_librdkafka(), "client.id": client_id,
            "logger": LibrdkafkaLog(ref.connection.secrets()), "error_cb": lambda _err: None}


def fence(spec: StreamSpec, timeout: float = 10.0,
          make: Callable[[dict[str, Any]], ProducerLike] | None = None) -> bool:
    """Aborts whatever transaction the deployment's producers left open; True when done. `make`: the runner's
    client factory (fakes in the unit tests); a plain confluent-kafka Producer by default."""
    secrets = spec.secrets()
    config = {**producer_config(spec, lambda _err: None, transaction_timeout_ms=60_000),
              "client.id": f"wml-{spec.deployment_id}-fence"}
    try:
        producer = (make or Producer)(config)
        producer.init_transactions(timeout)
        producer.flush(0)
    except KafkaException as exc:
        log.warning("deployment %s: could not fence its transactional id on %s: %s", spec.deployment_id,
                    ", ".join(spec.output.connection.brokers), redact(str(exc), secrets))
        return False
    return True


def delete_group(spec: StreamSpec, timeout: float = 30.0) -> bool:
    """Deletes the deployment's consumer group from the input brokers; True when it is gone."""
    secrets = spec.secrets()
    admin = AdminClient(_config(spec.input, f"wml-{spec.deployment_id}-cleanup"))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        attempt = max(1.0, min(10.0, deadline - time.monotonic()))
        try:
            admin.delete_consumer_groups([spec.group_id], request_timeout=attempt)[spec.group_id].result()
            return True
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is not None and err.code() in _GONE:
                return True
            last = redact(err.str() if err is not None else str(exc), secrets)
            if err is None or err.code() not in _BUSY:
                break
        time.sleep(0.5)
    log.warning("deployment %s: its consumer group %s could not be deleted from %s: %s", spec.deployment_id,
                spec.group_id, ", ".join(spec.input.connection.brokers), last or "timed out")
    return False


def remove_leftovers(spec: StreamSpec) -> bool:
    """After the deployment's last runner has finished: abort its open transaction, delete its group; True when
    the group is gone (a transaction left open expires by itself, an undeleted group's offsets would not while
    retried)."""
    fence(spec)
    if delete_group(spec):
        log.info("deployment %s: consumer group %s deleted", spec.deployment_id, spec.group_id)
        return True
    return False
