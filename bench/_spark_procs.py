"""The processes of a Spark stream and their memory, for bench/spark_throughput.py (Linux /proc).

- the driver: `python -m wml_server.spark.driver` (its pid in the deployment's driver.pid) and its descendants
  (the JVM that py4j starts for it);
- the executors: descendants of the cluster's worker JVMs whose command line holds CoarseGrainedExecutorBackend;
- the Python workers: the descendants of those executors (pyspark's daemon and the workers it forks).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from _stream_run import rss_mb

EXECUTOR_CLASS = b"CoarseGrainedExecutorBackend"


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    out, todo = [], list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(tree.get(child, []))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def driver_pid(state_dir: Path) -> int | None:
    try:
        return int((state_dir / "driver.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _rss(pids: list[int]) -> float:
    """The RSS of `pids` together; a process gone between the listing and the read counts 0, not NaN."""
    return sum(v for v in (rss_mb(p) for p in pids) if v == v)


def stream_memory(driver: int | None, worker_pids: list[int]) -> dict[str, float]:
    """RSS in MiB now: the driver (with its JVM), the executors' JVMs, their Python workers; and counts."""
    tree = _children()
    driver_tree = [driver, *descendants(driver, tree)] if driver else []
    executors = [p for w in worker_pids for p in descendants(w, tree) if EXECUTOR_CLASS in _cmdline(p)]
    pythons = [p for e in executors for p in descendants(e, tree)]
    return {"driver_rss_mb": _rss(driver_tree), "driver_processes": len(driver_tree),
            "executors_rss_mb": _rss(executors), "executors": len(executors),
            "python_workers_rss_mb": _rss(pythons), "python_workers": len(pythons)}


class MemorySampler:
    """Samples stream_memory() every `every` seconds in a thread; keeps the peak of each figure."""

    def __init__(self, sample: Callable[[], dict[str, float]], every: float = 1.0) -> None:
        self.sample, self.every = sample, every
        self.peak: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-spark-memory", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.last = self.sample()
            for key, value in self.last.items():
                if value == value:  # not NaN
                    self.peak[key] = max(self.peak.get(key, 0.0), value)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
