"""benchmarks.ranking: the table reads evaluate's JSON report (accuracies per role, scores as fractions)."""

from __future__ import annotations

from benchmarks import ranking


def report(scores: dict) -> dict:
    rows = [
        {"role": "set", "accuracies": [80.0, 82.0]},
        {"role": "random", "accuracies": [70.0, 70.0]},
        {"role": "full", "accuracies": [90.0]},
        {"role": "set_soft", "accuracies": [84.0, 84.0]},
    ]
    return {
        "networks": [
            {
                "label": "convnet depth 3 width 128",
                "seconds": 12.4,
                "rows": rows,
                "scores": {"split": "validation", "values": scores, "missing": {}},
            }
        ]
    }


def test_table_row_per_set_and_network():
    text = ranking.table({"IPC 10": report({"ior": 0.11, "hlr": 0.09, "lrs": 0.28, "ars": 0.3})})
    row = [line for line in text.splitlines() if line.startswith("| IPC 10")][0]
    # hard 81 +- 1.41, random 70 +- 0, soft 84 +- 0, random soft not evaluated, full 90 (one net); signed IOR/HLR, plain LRS/ARS
    assert (
        row
        == "| IPC 10 | convnet depth 3 width 128 | 81.00 +- 1.41 | 70.00 +- 0.00 | 84.00 +- 0.00 | - | 90.00 +- 0.00 | +0.110 | +0.090 | 0.280 | 0.300 | - | - | 12 |"
    )
