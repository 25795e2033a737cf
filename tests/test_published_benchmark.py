"""benchmarks.published: the published-protocol lines and the README's results table come from the results files alone."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks import published
from benchmarks.protocol import RANDOM_REAL
from benchmarks.runner import ResultStore

ROOT = Path(__file__).resolve().parents[1]


def run(variant, seed, test, val, fit=3600.0, evaluation=360.0, steps=2020):
    return {"variant": variant, "seed": seed, "accuracies": test, "mean": sum(test) / len(test), "val_accuracies": val, "val_mean": sum(val) / len(val),
            "fit_cpu_seconds": fit, "eval_cpu_seconds": evaluation, "steps": steps, "outer": 202, "inner_loop": 10, "epochs": 1000, "fit_seconds": fit}  # fmt: skip


ROWS = [
    run("paper", 0, [80.0, 82.0, 84.0], [81.0, 81.0, 81.0]),
    run("paper", 1, [81.0, 83.0, 85.0], [82.0, 82.0, 82.0]),
    # better on test, worse on validation: must not be chosen
    run("lucky", 0, [90.0, 90.0, 90.0], [80.0, 80.0, 80.0]),
    run("lucky", 1, [90.0, 90.0, 90.0], [80.0, 80.0, 80.0]),
    run(RANDOM_REAL, 0, [70.0, 72.0, 74.0], [70.0, 70.0, 70.0], fit=0.0, steps=0),
    run(RANDOM_REAL, 1, [71.0, 73.0, 75.0], [71.0, 71.0, 71.0], fit=0.0, steps=0),
]


def test_the_line_reports_the_validation_choice_over_every_network():
    summary = published.study_summary(ROWS)
    assert summary["chosen"] == "paper" and summary["candidates"] == 2 and (summary["seeds"], summary["nets"]) == (2, 3)
    # six networks 80, 82, 84, 81, 83, 85: mean 82.5, sample std sqrt(17.5 / 5) = 1.87; random real 72.5 +- 1.87
    # per set: mean fit 3600 s = 1.00 CPU-hour; study: 4 fits of 3600 + 6 evaluations of 360 = 16 560 s = 4.6 CPU-hours;
    # 1 CPU-hour per 2 020 steps -> 200 000 steps = 99.0 CPU-hours
    line = published.published_line(10, summary)
    assert line == ("IPC 10: 82.50 +- 1.87 % (published 86.0 %, IDC) (3.5 points below), random real 72.50 +- 1.87 %, 1.00 CPU-hours per set "
                    "(2020 matching steps; pool pretraining counted in the run that built it; the study 4.6 CPU-hours with its evaluations), 2 seeds x 3 nets, `paper` chosen on validation among 2; "
                    "the paper's 200,000 matching steps at this step cost: about 99 CPU-hours")  # fmt: skip
    assert published.published_line(50, None) == "IPC 50: not measured yet (published 89.1 %, IDC-I)."


def test_no_choice_without_validation_scores():
    assert published.study_summary([{**r, "val_mean": None} for r in ROWS]) is None


def test_readme_table_is_generated_from_the_results_files():
    """The README's results table equals what the committed results files give (run ``python -m benchmarks.published`` after new results)."""
    readme = (ROOT / "README.md").read_text()
    assert published.readme_drift(readme, ROOT) is None
    # a figure edited by hand is caught: change the first number of the table's first data row
    table = readme.split("<!-- results-table:start -->\n", 1)[1].split("\n<!-- results-table:end -->", 1)[0]
    row = table.splitlines()[2]
    edited = re.sub(r"\d+\.\d+", lambda m: f"{float(m.group()) + 0.1:.2f}", row, count=1)
    assert edited != row
    assert (
        published.readme_drift(readme.replace(row, edited), ROOT)
        == "the README's results table differs from the results files"
    )
    assert published.readme_drift("no table", ROOT) == "the README has no generated results table"


def test_the_table_of_a_study(tmp_path):
    path = tmp_path / "study.jsonl"
    store = ResultStore(path, ("variant", "seed"))
    for row in ROWS:
        store.add(row)
    studies = {10: (str(path), "configs/fashion_mnist/ipc10_cpu.yaml")}
    table = published.readme_table(published.summaries(studies, [10, 50], Path("/")), studies)
    assert "| 10 | `fashion_mnist/ipc10_cpu.yaml` | 82.50 +- 1.87 | 72.50 +- 1.87 | 86.0 (IDC) | 1.00 |" in table
    assert "| 50 | - | not measured yet | - | 89.1 (IDC-I) | - |" in table
