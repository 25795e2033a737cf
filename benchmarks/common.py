"""What the wall-clock benchmarks share: the compared modes, the config they read, the provenance line, the doc section writer."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

from lightning_dd import RealDataModule
from lightning_dd.atomic import atomic_open
from lightning_dd.classify import TrainSchedule
from lightning_dd.nets import NetSpec

# Acc-DD: perturbed early-stage pool members; IDC mode: fresh random networks, no perturbation.
MODES = (("Acc-DD", {"model_source": "pool", "perturb": True}), ("IDC mode", {"model_source": "random", "perturb": False}))


@dataclass
class BenchmarkConfig:
    """A config file's ``model`` and ``data`` sections, the evaluation schedule and the set-up data."""

    model: dict
    data: dict
    schedule: TrainSchedule
    net: NetSpec
    datamodule: RealDataModule


def load_config(path: str, eval_epochs: int | None, threads: int) -> BenchmarkConfig:
    """Read ``path``; evaluation epochs default to the config's ``evaluation.epochs`` (300 if absent)."""
    torch.set_num_threads(threads)
    os.environ.setdefault("LIGHTNING_DD_QUIET", "1")
    config = yaml.safe_load(Path(path).read_text())
    model, data = config["model"], config.get("data", {})
    schedule = TrainSchedule(epochs=eval_epochs or config.get("evaluation", {}).get("epochs", 300))
    datamodule = RealDataModule(**data)
    datamodule.setup()
    return BenchmarkConfig(model, data, schedule, NetSpec(**model.get("net", {})), datamodule)


def provenance(script: str, argv: list[str] | None, threads: int) -> str:
    """``Command: `...`; machine: ...; date.`` for the end of a benchmark section."""
    command = "python " + " ".join([script, *(argv if argv is not None else sys.argv[1:])])
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} thread(s), Python {platform.python_version()}"
    return f"Command: `{command}`; machine: {machine}; {datetime.now(timezone.utc):%Y-%m-%d}."


def write_section(path: Path, marker: str, body: str) -> None:
    """Replace (or append) the text between ``<!-- marker:start -->`` and ``<!-- marker:end -->``, atomically."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    first, last = text.find(start), text.find(end)
    if first != -1 and last > first:
        text = text[:first] + block + text[last + len(end) :]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    with atomic_open(path, "w") as handle:
        handle.write(text)
