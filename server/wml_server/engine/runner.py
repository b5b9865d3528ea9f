"""The thread that runs one stream deployment, from INITIALIZING to STOPPED or FAILED."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from wml_server.engine.cleanup import fence
from wml_server.engine.clients import ClientFactory
from wml_server.engine.connection import Stopped
from wml_server.engine.failures import StreamFailure
from wml_server.engine.metrics import EngineMetrics
from wml_server.engine.options import StreamOptions
from wml_server.engine.position import StreamProgress
from wml_server.engine.session import StreamSession
from wml_server.engine.spec import StreamSpec
from wml_server.engine.state import (
    FAILED,
    INTERNAL_ERROR,
    KAFKA_AUTHENTICATION_FAILED,
    KAFKA_AUTHORIZATION_FAILED,
    KAFKA_CONFIGURATION_INVALID,
    KAFKA_PRODUCER_FENCED,
    KAFKA_UNREACHABLE,
    RUNNING,
    STOPPED,
    Errors,
    StreamCounts,
)

log = logging.getLogger(__name__)

# Failures after which fencing is pointless (the credentials or configuration cannot make a producer, or the
# brokers have not answered for unreachable_timeout already: the broker's transaction timeout will do) or wrong
# (another runner of the deployment holds the transactional id now).
_CANNOT_FENCE = (KAFKA_AUTHENTICATION_FAILED, KAFKA_AUTHORIZATION_FAILED, KAFKA_CONFIGURATION_INVALID,
                 KAFKA_PRODUCER_FENCED, KAFKA_UNREACHABLE)


class StreamRunner:
    """Runs a StreamSession in a daemon thread and reports each status change through `report`.

    `predecessor`: an earlier runner of the same deployment that is still shutting down. This one waits for
    it to finish before connecting, so two runners never compete for the deployment's transactional id.
    """

    def __init__(self, spec: StreamSpec, report: Callable[[StreamRunner, str, Errors], None], *,
                 metrics: EngineMetrics, counts: StreamCounts, options: StreamOptions, clients: ClientFactory,
                 predecessor: StreamRunner | None = None, progress: StreamProgress | None = None) -> None:
        self.spec = spec
        self.progress = progress or StreamProgress()
        self._report = report
        self._metrics = metrics
        self._counts = counts
        self._options = options
        self._clients = clients
        self._predecessor = predecessor
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"wml-stream-{spec.deployment_id[:8]}", daemon=True)
        self._session: StreamSession | None = None

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        """Asks the runner to stop after committing the batch in flight; returns at once."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def scoring_pids(self) -> list[int]:
        session = self._session
        return session.scoring_pids() if session is not None else []

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None) -> bool:
        """True when the runner has finished (its clients closed) within `timeout` seconds."""
        if self._thread.ident is None:  # never started
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        # INITIALIZING was announced by Engine.start, before this thread existed.
        while self._predecessor is not None and not self._predecessor.join(0.1):
            if self._stopping.is_set():
                break
        if self._stopping.is_set():
            self._report(self, STOPPED, [])
            return
        session = StreamSession(self.spec, self._options, self._clients, self._stopping, self._metrics,
                                self._counts, self.progress)
        self._session = session
        status, errors = STOPPED, []
        try:
            session.connect()
            self._report(self, RUNNING, [])
            session.run()
        except Stopped:
            pass
        except StreamFailure as failure:
            status, errors = FAILED, [(failure.code, failure.message)]
            log.warning("stream %s FAILED: %s", self.spec.deployment_id, failure.message)
        except Exception:
            log.exception("stream %s stopped on an unexpected error", self.spec.deployment_id)
            status, errors = FAILED, [(INTERNAL_ERROR, "The stream stopped on an unexpected error of the service; "
                                                       "its log has the details.")]
        finally:
            # Closed before STOPPED is reported: whoever starts the deployment again finds the clients gone.
            session.close(clean=status == STOPPED)
        self._report(self, status, errors)
        if status == FAILED and errors[0][0] not in _CANNOT_FENCE:
            # A failure mid-transaction leaves it open (close without abort): every read_committed reader of
            # the output topic would wait transaction.timeout.ms (60 s) behind it. Fencing aborts it at once.
            # After the report, in this thread: a restart of the deployment waits for it (predecessor).
            fence(self.spec, timeout=5.0, make=self._clients.producer)
