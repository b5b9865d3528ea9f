"""A model a user published through the repository API: metadata for the API, and a way to score with it.

Its content is untrusted code (a pickle runs whatever it was made to run when loaded), so it is never loaded in
the service's process: each running deployment opens a sandboxed worker process of its own
(`wml_server.workers`) and scores through it.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wml_server.repository.schema import InputSchema


@dataclass(frozen=True)
class WorkerOptions:
    """How workers are run (the service's settings)."""

    require_sandbox: bool = True
    memory_limit_bytes: int = 2 << 30
    load_timeout: float = 120.0
    predict_timeout: float = 60.0


@dataclass(frozen=True)
class PublishedUserModel:
    id: str
    instance_id: str
    version_id: str
    name: str
    description: str
    model_type: str  # e.g. scikit-learn-1.9, mllib-3.5
    framework: str
    content_format: str  # wml_server.repository.frameworks: pickle, pickle-tar, skops, mllib-tar
    schema: InputSchema | None
    label_values: tuple[Any, ...] | None
    read_content: Callable[[], bytes]
    options: WorkerOptions

    @property
    def runtime_environment(self) -> str:
        return f"python-{platform.python_version()}"
