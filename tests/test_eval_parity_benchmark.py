"""benchmarks.eval_parity: the table pairs the two sides per set and epoch count; finished networks are not retrained."""

from __future__ import annotations

import json

import pytest

from benchmarks import eval_parity
from benchmarks.runner import ResultStore


def _row(name, side, epochs, seed, accuracy, seconds=10.0):
    return {
        "set": name,
        "side": side,
        "epochs": epochs,
        "seed": seed,
        "accuracy": accuracy,
        "seconds": seconds,
        "machine": "m",
    }


def test_table_pairs_ours_and_theirs_per_set_and_epochs():
    rows = [
        _row("initial", "ours", 100, 0, 70.0, 20), _row("initial", "ours", 100, 1, 72.0, 40),
        _row("initial", "theirs", 100, 0, 73.0, 30), _row("initial", "theirs", 100, 1, 75.0, 30),
        _row("random real", "ours", 300, 0, 77.0),
    ]  # fmt: skip
    table = eval_parity.table(rows, [100, 300])
    # ours 71 +- sqrt(2), theirs 74 +- sqrt(2): difference -3; seconds 30 / 30
    assert "| initial | 100 | 71.00 +- 1.41 (2) | 74.00 +- 1.41 (2) | -3.00 | 30 / 30 |" in table
    assert "| random real | 300 | 77.00 +- 0.00 (1) | - | - | 10 / - |" in table
    assert "| initial | 300 |" not in table and "distilled" not in table


def test_done_networks_are_keyed_by_set_side_epochs_and_seed(tmp_path):
    out = tmp_path / "runs.jsonl"
    rows = [
        _row("initial", "ours", 100, 0, 70.0),
        _row("initial", "theirs", 100, 0, 71.0),
        _row("initial", "ours", 100, 0, 69.0),
    ]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = ResultStore(out, eval_parity.KEY)
    assert {store.key(r) for r in store.rows()} == {("initial", "ours", 100, 0), ("initial", "theirs", 100, 0)}
    assert store.rows(side="ours")[0]["accuracy"] == 69.0  # a later line replaces an earlier one
    assert store.todo([_row("initial", "ours", 100, 0, 0.0), _row("initial", "ours", 300, 0, 0.0)]) == [
        _row("initial", "ours", 300, 0, 0.0)
    ]


def test_a_folder_that_is_not_the_authors_checkout_is_refused_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="not a checkout"):
        eval_parity.main(
            [
                "--authors_dir",
                str(tmp_path),
                "--distilled",
                "x.pt",
                "--work",
                str(tmp_path / "w"),
                "--out",
                str(tmp_path / "o.jsonl"),
            ]
        )
    assert not (tmp_path / "w").exists()
