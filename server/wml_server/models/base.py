"""What the service needs from a published model: stable metadata for the API and a batch `predict`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class ModelInfo(Protocol):
    """What the API shows of any published model, a built-in one or a user's.

    The attributes are read-only properties so that plain class attributes, frozen dataclasses and
    properties all satisfy the protocol.
    """

    @property
    def id(self) -> str:
        """A UUID that never changes: clients keep it in manifests and URLs."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def model_type(self) -> str:
        """What kind of model this is, e.g. "vader-sentiment"."""

    @property
    def runtime_environment(self) -> str:
        """What really runs it, e.g. "python-3.11 vaderSentiment-3.3.2"; reported as the API's field."""


@runtime_checkable
class Model(ModelInfo, Protocol):
    """A built-in model, scored in the service's process. `predict` must be safe to call from several threads
    at once: every running stream deployment calls it from its own thread."""

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        """Labels and, for each label, the probability of that label, in the order of `texts`."""
