"""py-spy around one run of bench/stream_throughput.py (--py-spy PATH), and what its samples say.

py-spy (a PyPI package: `.venv/bin/pip install py-spy`) samples this very process from outside, every
thread, idle ones included (--idle), so the figures are shares of wall-clock time per thread: where the
engine's thread waits on the broker shows as well as where the scoring thread spends its CPU. The raw
output (collapsed stacks, one line per distinct stack with its sample count) is kept at PATH.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_THREAD = re.compile(r"^thread \((?P<id>\w+)\)(?::\s*(?P<name>.*))?$")
_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy_binary() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


@contextmanager
def py_spy(path: Path, rate: int = 200) -> Iterator[None]:
    """Samples this process (all threads, idle too) while the block runs; raw collapsed stacks into `path`."""
    log = path.with_suffix(path.suffix + ".log")
    with log.open("w") as err:
        recorder = subprocess.Popen(
            [py_spy_binary(), "record", "--pid", str(os.getpid()), "--rate", str(rate), "--format", "raw",
             "--threads", "--idle", "--output", str(path)], stdout=err, stderr=subprocess.STDOUT)
    time.sleep(1.0)  # attached before the run starts
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # our own child, by its handle: it writes the file and exits
        try:
            recorder.wait(60)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait(10)


def _function(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['function']} ({match['file']})"


def summarize(path: Path, names: dict[int, str], top: int = 12) -> dict[str, Any]:
    """Per thread of interest: its samples, and the functions with the largest shares of them, inclusive
    (the function or anything it called) and self (the function itself, innermost frame).

    `names`: native thread id -> role; py-spy names threads by their pthread id, so both are tried."""
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    own: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = "?"
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and (match := _THREAD.match(frames[0])):
            thread = f"{match['id']} {match['name'] or ''}".strip()
            frames = frames[1:]
        totals[thread] += count
        functions = [_function(f) for f in frames]
        for function in set(functions):
            inclusive[thread][function] += count
        if functions:
            own[thread][functions[-1]] += count
    by_role: dict[str, Any] = {}
    for thread, total in totals.most_common():
        role = _role(thread, inclusive[thread], names)
        if role is None:
            continue
        by_role[role] = {
            "samples": total,
            "inclusive": [{"function": f, "share": n / total} for f, n in inclusive[thread].most_common(top)],
            "self": [{"function": f, "share": n / total} for f, n in own[thread].most_common(top)],
        }
    return by_role


def _role(thread: str, functions: Counter[str], names: dict[int, str]) -> str | None:
    """The stream's threads, by their native id (py-spy's on Linux), else by what they run."""
    ident = thread.split(" ", 1)[0]
    with contextlib.suppress(ValueError):
        if (role := names.get(int(ident, 16) if ident.startswith("0x") else int(ident))) is not None:
            return role
    if any(".run_wrapper (" in f or "StreamSession._stream (" in f for f in functions):
        return "engine"
    if any("StreamSession._score (" in f for f in functions):
        return "scoring"
    return None


def report(summary: dict[str, Any], top: int = 8) -> str:
    lines = []
    for role, figures in summary.items():
        lines.append(f"py-spy, {role} thread ({figures['samples']} samples, wall clock, idle included):")
        lines.append("  inclusive: " + "; ".join(f"{e['function']} {e['share']:.0%}"
                                                  for e in figures["inclusive"][:top]))
        lines.append("  self:      " + "; ".join(f"{e['function']} {e['share']:.0%}"
                                                  for e in figures["self"][:top]))
    return "\n".join(lines)
