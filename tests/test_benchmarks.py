"""benchmarks.throughput: the Markdown section writer (fast) and a --quick run end to end (subprocess)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def throughput():
    from benchmarks import throughput as module

    return module


def test_section_is_created_appended_or_replaced(throughput, tmp_path):
    start, end = "<!-- throughput:start -->", "<!-- throughput:end -->"
    path = tmp_path / "docs" / "bench.md"
    throughput.report.write_section(path, throughput.MARKER, "first")
    assert path.read_text() == f"# Benchmarks\n\n{start}\nfirst\n{end}\n"

    path.write_text("# Notes\n\nhand-written text\n")
    throughput.report.write_section(path, throughput.MARKER, "second")
    assert path.read_text() == f"# Notes\n\nhand-written text\n\n{start}\nsecond\n{end}\n"

    path.write_text(f"head\n\n{start}\nold\nlines\n{end}\n\ntail\n")
    throughput.report.write_section(path, throughput.MARKER, "third\n")
    assert path.read_text() == f"head\n\n{start}\nthird\n{end}\n\ntail\n"
    assert [p.name for p in path.parent.iterdir()] == ["bench.md"]  # no temporary file left behind


def test_shapes_parse_as_height_width_channels(throughput):
    assert throughput.parse_shape("28x28x1") == (28, 28, 1)
    assert throughput.parse_shape("8X6x3") == (8, 6, 3)
    for bad in ("32x32", "axbxc", "0x8x1"):
        with pytest.raises(Exception):
            throughput.parse_shape(bad)


def test_precision_modes_parse_and_auto_follows_the_hardware(throughput):
    import argparse

    from lightning_dd.utils.hardware import cpu_bf16_units

    assert throughput.parse_precisions("32,bf16") == ["32", "bf16"]
    assert throughput.parse_precisions("bf16, bf16") == ["bf16"]
    assert throughput.parse_precisions("auto") == ["auto"]
    for bad in ("", "fp16", "32,16"):
        with pytest.raises(argparse.ArgumentTypeError):
            throughput.parse_precisions(bad)
    assert throughput.fast_bf16(throughput.torch.device("cpu")) == bool(cpu_bf16_units())
    assert [throughput.mode_name(p) for p in ("32", "bf16")] == ["fp32", "bf16"]


@pytest.mark.slow
def test_quick_run_prints_the_table_and_rewrites_only_its_section(tmp_path):
    output = tmp_path / "bench.md"
    output.write_text(
        "# Bench\n\nintro stays\n\n<!-- throughput:start -->\nstale numbers\n<!-- throughput:end -->\n\ntrailer stays\n"
    )
    command = [
        sys.executable,
        "-m",
        "benchmarks.throughput",
        "--quick",
        "--shapes",
        "8x8x1",
        "--output",
        str(output),
        "--threads",
        "1",
        "--precision",
        "32,bf16",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()

    # Exactly one closing speed-up line, and it is the last line.
    assert re.fullmatch(r"speed-up vs reference: \d+\.\d{2}x", lines[-1]), lines[-1]
    assert sum(line.startswith("speed-up vs reference:") for line in lines) == 1

    # Both paths computed the same matching loss.
    check = re.search(
        r"^loss check 8x8x1: reference (\S+), library (\S+), relative difference (\S+) ", proc.stdout, re.M
    )
    assert check, proc.stdout
    assert float(check.group(3)) < 1e-4
    assert float(check.group(1)) == pytest.approx(float(check.group(2)), rel=1e-4)

    # The table: one row per path with positive numbers; the library row's ratio is the closing line's.
    assert (
        "| shape | path | s / inner iteration (median) | images matched / s | peak memory MB | speed-up vs reference |"
        in lines
    )
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("| 8x8x1 |")]
    assert [row[1] for row in rows] == ["reference", "reference + tuned allocator", "library (fp32)", "library (bf16)"]
    for row in rows:
        assert float(row[2]) > 0 and float(row[3].replace(",", "")) > 0 and float(row[4].replace(",", "")) >= 0
    # The closing line is the best mode's ratio (one shape: that mode's row).
    ratios = {"fp32": float(rows[2][5].rstrip("x")), "bf16": float(rows[3][5].rstrip("x"))}
    best = max(ratios, key=ratios.get)
    assert lines[-2].endswith(f"best mode: {best}"), lines[-2]
    assert lines[-1] == f"speed-up vs reference: {ratios[best]:.2f}x"
    assert re.search(
        r"^- bf16 autocast \(numerics change\): matching loss relative difference to the fp32 reference \S+",
        output.read_text(),
        re.M,
    )

    # The file: the section was replaced, everything around it kept.
    text = output.read_text()
    assert text.startswith("# Bench\n\nintro stays\n\n<!-- throughput:start -->\n")
    assert text.endswith("<!-- throughput:end -->\n\ntrailer stays\n")
    assert "stale numbers" not in text and text.count("<!-- throughput:start -->") == 1
    section = text.split("<!-- throughput:start -->")[1].split("<!-- throughput:end -->")[0]
    assert "python -m benchmarks.throughput --quick --shapes 8x8x1" in section
    assert "torch " in section and " cores, " in section and "Date: " in section
    assert all("| 8x8x1 | " + row[1] + " |" in section for row in rows)
    assert "relative difference" in section and "GFLOP/s" in section and lines[-1] in section
    assert re.search(
        r"^- FLOPs of one matching class-step .*: reference \d+\.\d{3} GFLOP, library \d+\.\d{3} GFLOP$", section, re.M
    )


@pytest.mark.parametrize("side, factor", [(8, 2), (10, 3), (28, 2)])
def test_the_reference_decode_follows_the_library_and_the_authors_padding(throughput, side, factor):
    """The reference loop decodes as the library does (grey-padded tiles where the factor does not divide the side)."""
    import torch

    from lightning_dd.distill.synthetic import decode

    reference_loop = throughput.reference_loop

    images = torch.rand(3, 2, side, side, generator=torch.Generator().manual_seed(side))
    tiles = factor * factor
    # the reference is tile-major (every image's first tile, then the second...); the library image-major
    tile_major = (
        decode(images, factor).reshape(3, tiles, 2, side, side).transpose(0, 1).reshape(3 * tiles, 2, side, side)
    )
    assert torch.allclose(reference_loop.decode(images, factor), tile_major, atol=1e-6)
