"""How every benchmark reports: statistics, Markdown tables, the machine and command line, doc sections between markers."""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from lightning_dd.utils.atomic import atomic_open

ROOT = Path(__file__).resolve().parents[1]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value), as every results table reports them."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cell(values: list[float], count: bool = True, signed: bool = False) -> str:
    """``mean +- std (n)`` for a table cell; ``-`` when there is nothing."""
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{m:{'+' if signed else ''}.2f} +- {s:.2f}" + (f" ({len(values)})" if count else "")


def md_table(header: list[str], rows: list[list], right: int = 0) -> str:
    """A Markdown table, the last ``right`` columns right-aligned."""
    align = ["---"] * (len(header) - right) + ["---:"] * right
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the architecture."""
    try:
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def gpu_suffix(device: str) -> str:
    """``", GPU <name>"`` when ``device`` is CUDA and a GPU is present, else nothing."""
    return (
        f", GPU {torch.cuda.get_device_name()}" if str(device).startswith("cuda") and torch.cuda.is_available() else ""
    )


def machine_name(device: str) -> str:
    """Architecture, cores and the GPU in use: kept with each result row, which may be tabulated elsewhere later."""
    return f"{platform.machine()}, {os.cpu_count()} cores{gpu_suffix(device)}"


def machine_line(threads: int, device: str = "cpu") -> str:
    """The machine in one line: CPU, cores, torch, threads, Python and the GPU in use."""
    return f"{platform.machine()} {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} thread(s), Python {platform.python_version()}{gpu_suffix(device)}"


def code_version() -> str:
    """The lightning-dd commit that ran, naming uncommitted library files (the results measure them)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "lightning_dd"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return f"commit {commit}" + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")


def command(benchmark: str, argv: list[str] | None) -> str:
    """The command line that reproduces a run: ``python -m benchmarks.<name> ...``, less ``--report_only`` (the command completes the runs)."""
    return shlex.join(
        [
            "python",
            "-m",
            f"benchmarks.{benchmark}",
            *(a for a in (sys.argv[1:] if argv is None else argv) if a != "--report_only"),
        ]
    )


def provenance(benchmark: str, argv: list[str] | None, threads: int, device: str = "cpu") -> str:
    """``Command: `...`; machine: ...; date.`` for the end of a benchmark section."""
    return f"Command: `{command(benchmark, argv)}`; machine: {machine_line(threads, device)}; {datetime.now(timezone.utc):%Y-%m-%d}."


def write_section(path: Path, marker: str, body: str) -> None:
    """Replace (or append) the text between ``<!-- marker:start -->`` and ``<!-- marker:end -->``, atomically."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    first, last = text.find(start), text.find(end)
    if first != -1 and last > first:
        text = text[:first] + block + text[last + len(end) :]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    with atomic_open(path, "w") as handle:
        handle.write(text)
