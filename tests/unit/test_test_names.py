"""pytest imports test modules by their file's name alone (the test folders are not packages): two test files of
one name in different folders stop the whole session at collection, which only a run of every suite shows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_file_has_a_name_of_its_own() -> None:
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert {name: n for name, n in names.items() if n > 1} == {}
