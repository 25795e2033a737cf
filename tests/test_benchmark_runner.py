"""benchmarks.runner and benchmarks.report: the results store, the parallel map, the shared table and section writers."""

from __future__ import annotations

import json

import pytest

from benchmarks.report import cell, md_table, write_section
from benchmarks.runner import ResultStore, parallel_map
from lightning_dd.utils.errors import ConfigError


def test_the_store_resumes_by_key_replaces_a_rerun_row_and_survives_reopening(tmp_path):
    path = tmp_path / "runs.jsonl"
    store = ResultStore(path, ("name", "seed"))
    tasks = [{"name": n, "seed": s} for n in ("a", "b") for s in (0, 1)]
    store.add({"name": "a", "seed": 0, "acc": 1.0})
    store.add({"name": "a", "seed": 0, "acc": 2.0})  # the same key again: the later row wins
    again = ResultStore(path, ("name", "seed"))
    assert [t for t in again.todo(tasks)] == tasks[1:]
    assert [r["acc"] for r in again.rows(name="a")] == [2.0]
    assert all("machine" in json.loads(line) for line in path.read_text().splitlines())


def test_the_store_refuses_rows_of_other_settings(tmp_path):
    path = tmp_path / "runs.jsonl"
    ResultStore(path, ("seed",), settings={"width": 8}).add({"seed": 0})
    assert ResultStore(path, ("seed",), settings={"width": 8}).rows()[0]["seed"] == 0
    with pytest.raises(ConfigError, match="other settings"):
        ResultStore(path, ("seed",), settings={"width": 16})


def test_parallel_map_returns_every_result_from_processes():
    assert sorted(parallel_map(abs, [-3, -1, 2], jobs=2)) == [1, 2, 3]
    assert list(parallel_map(abs, [-3], jobs=2)) == [3]


def test_cells_tables_and_sections():
    assert (
        cell([1.0, 3.0]) == "2.00 +- 1.41 (2)"
        and cell([]) == "-"
        and cell([2.0], count=False, signed=True) == "+2.00 +- 0.00"
    )
    assert md_table(["a", "b"], [[1, 2]], right=1) == "| a | b |\n|---|---:|\n| 1 | 2 |"


def test_a_section_is_replaced_between_its_markers(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\ntext\n")
    write_section(doc, "x", "one")
    write_section(doc, "x", "two")
    assert doc.read_text() == "# Title\n\ntext\n\n<!-- x:start -->\ntwo\n<!-- x:end -->\n"
