"""benchmarks/precision.py end to end on digits with tiny settings (subprocess)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_precision_compares_fp32_and_bf16_per_seed(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "data:\n  dataset: digits\n"
        "model:\n  ipc: 1\n  factor: 1\n  init: real\n  net: {depth: 1, width: 8}\n  model_source: random\n"
        "  outer_iterations: 1\n  inner_loop: 2\n  n_data: 16\n"
        "evaluation:\n  epochs: 2\n"
    )
    output = tmp_path / "bench.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "precision.py"), "--config", str(config), "--seeds", "0", "1", "--repeats", "1", "--jobs", "2", "--threads", "1", "--output", str(output)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    section = output.read_text()
    assert "<!-- precision-digits-ipc1:start -->" in section
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [r.split("|")[1].strip() for r in rows] == ["0", "1"]
    fp32, bf16, diff = (float(rows[0].split("|")[k]) for k in (2, 3, 4))
    assert diff == pytest.approx(bf16 - fp32, abs=0.011)
    assert re.search(r"Mean paired difference [+-]\d+\.\d\d points \((NOT )?within 1 point\)", section)
    assert "Command: `python benchmarks/precision.py" in section and "CPU bf16 units:" in section
