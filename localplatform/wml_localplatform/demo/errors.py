"""The demo's expected failures: each message says what went wrong and what to do."""

from __future__ import annotations


class DemoError(RuntimeError):
    """An expected failure: the message says what went wrong and what to do."""


class PortTaken(DemoError):
    """A port the demo needs is in use by another program."""
