"""A Spark driver's status file: written by the driver (atomically), read by the service's supervisor."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class StatusFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, status: str, *, errors: list[list[str]] | None = None, **fields: Any) -> None:
        data = {"status": status, "errors": errors or [], "pid": os.getpid(), "at": time.time(),
                **{k: v for k, v in fields.items() if v is not None}}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)

    def read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None
