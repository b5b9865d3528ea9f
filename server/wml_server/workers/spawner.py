"""Every model worker is forked by one long-lived thread.

The workers ask the kernel to SIGKILL them when their parent dies (PR_SET_PDEATHSIG), and the kernel means the
parent *thread*: a worker forked by a deployment's short-lived thread would be killed when that thread ends.
This thread lives as long as the process, so a worker dies exactly when the service does.
"""

from __future__ import annotations

import queue
import subprocess
import threading
from concurrent.futures import Future
from typing import Any

_Request = tuple["Future[subprocess.Popen[bytes]]", list[str], dict[str, Any]]

_requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
_lock = threading.Lock()
_thread: threading.Thread | None = None


def _serve() -> None:
    while True:
        future, args, options = _requests.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(subprocess.Popen(args, **options))  # type: ignore[arg-type]
        except BaseException as exc:
            future.set_exception(exc)


def spawn(args: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """subprocess.Popen(args, **options), forked by the spawner thread."""
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_serve, name="model-worker-spawner", daemon=True)
            _thread.start()
    future: Future[subprocess.Popen[bytes]] = Future()
    _requests.put((future, args, options))
    return future.result()
