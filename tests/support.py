"""Small test doubles shared by several suites (unit tests of one module only)."""

from __future__ import annotations

from collections.abc import Mapping


class DictSecrets:
    """A SecretReader over a dict of Secret name -> decoded data, for one namespace."""

    def __init__(self, data: dict[str, dict[str, str]], namespace: str | None = None) -> None:
        self.data = data
        self.namespace = namespace

    def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        if self.namespace is not None:
            assert namespace == self.namespace, f"read from namespace {namespace}, expected {self.namespace}"
        return self.data.get(name)
