"""The slow marker follows the measured durations (tests/conftest.py)."""

from __future__ import annotations

import json

import pytest

import conftest


class FakeItem:
    def __init__(self, nodeid: str, slow: bool = False) -> None:
        self.nodeid, self.markers = nodeid, ["slow"] if slow else []

    def get_closest_marker(self, name: str):
        return name if name in self.markers else None

    def add_marker(self, marker) -> None:
        self.markers.append(marker.name)


def test_tests_over_the_threshold_are_marked_slow_and_others_are_left_alone(tmp_path, monkeypatch):
    durations = tmp_path / "durations.json"
    durations.write_text(json.dumps({"a": conftest.SLOW_SECONDS + 0.1, "b": conftest.SLOW_SECONDS - 0.1, "c": 60.0}))
    monkeypatch.setattr(conftest, "DURATIONS", durations)
    items = [FakeItem("a"), FakeItem("b"), FakeItem("c", slow=True), FakeItem("new")]
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.markers for i in items] == [["slow"], [], ["slow"], []]


def test_the_recorded_durations_name_tests_that_exist():
    if not conftest.DURATIONS.exists():
        pytest.skip("no tests/durations.json recorded yet (make durations)")
    recorded = json.loads(conftest.DURATIONS.read_text())
    files = {nodeid.split("::")[0] for nodeid in recorded}
    assert all((conftest.DURATIONS.parent.parent / f).exists() for f in files)
