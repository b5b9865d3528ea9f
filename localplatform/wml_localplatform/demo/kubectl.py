"""kubectl with the demo's admin kubeconfig, and a live `kubectl get --watch` of the resource while waiting."""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from wml_localplatform.demo.console import Console
from wml_localplatform.demo.errors import DemoError


class Kubectl:
    """kubectl with the demo's admin kubeconfig; failures become DemoError with kubectl's message."""

    def __init__(self, binary: Path, kubeconfig: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.binary), f"--kubeconfig={self.kubeconfig}", *args], input=input,
                                capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise DemoError(f"kubectl {shlex.join(args)} failed: {result.stderr.strip()}")
        return result

    def json(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self(*args, "-o", "json").stdout)
        return data


def watch(kubectl: Kubectl, console: Console, namespace: str, name: str, waits: list[str],
          timeout: float = 120.0) -> float:
    """Shows `kubectl get sdep -o wide --watch` live until every `kubectl wait --for=...` condition holds."""
    args = ["get", "sdep", name, "-n", namespace, "-o", "wide", "--watch"]
    console.command(f"kubectl {shlex.join(args)}")
    proc = subprocess.Popen([str(kubectl.binary), f"--kubeconfig={kubectl.kubeconfig}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    printed = threading.Condition()
    rows: list[list[str]] = []  # the resource's rows printed so far (NAME to REASON: AGE always moves)

    def show() -> None:
        assert proc.stdout is not None
        last = ""
        for line in proc.stdout:
            # The operator's bookkeeping (annotations, resourceVersion) changes nothing in these columns.
            if line.strip() and line != last:
                console.say("  " + line.rstrip())
                last = line
                if not line.lstrip().startswith("NAME "):
                    with printed:
                        rows.append(line.split()[:5])
                        printed.notify_all()

    reader = threading.Thread(target=show, daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        for condition in waits:
            left = max(1, int(timeout - (time.monotonic() - started)))
            waited = kubectl("wait", f"--for={condition}", f"--timeout={left}s", "-n", namespace, f"sdep/{name}",
                             check=False, timeout=left + 10)
            if waited.returncode != 0:
                raise DemoError(f"sdep/{name} did not reach {condition} within {timeout:.0f} s: "
                                f"{waited.stderr.strip()}")
        return time.monotonic() - started
    finally:
        # The watch shows the state that satisfied the wait before it goes: on a busy machine its last event can
        # reach it after `kubectl wait` is done (and when the change was done before the watch was up, the first
        # row it prints is that state).
        now = kubectl("get", "sdep", name, "-n", namespace, "-o", "wide", "--no-headers", check=False)
        final = now.stdout.split()[:5]
        with printed:
            printed.wait_for(lambda: bool(rows) and (not final or rows[-1] == final), timeout=10.0)
        proc.terminate()
        proc.wait(10)
        reader.join(5)
        with printed:
            shown = bool(rows) and rows[-1] == final
        if final and not shown:
            # The watch fell behind (a loaded machine): the row `kubectl get` read is the state now.
            console.say("  " + now.stdout.strip().splitlines()[-1])
