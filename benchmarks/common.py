"""What the wall-clock benchmarks share: the compared modes, the config they read, the provenance line, the doc section writer."""

from __future__ import annotations

import inspect
import math
import os
import platform
import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

from lightning_dd import RealDataModule
from lightning_dd.atomic import atomic_open
from lightning_dd.callbacks import SyntheticEvaluation
from lightning_dd.classify import TrainSchedule
from lightning_dd.errors import ConfigError
from lightning_dd.nets import NetSpec

# Acc-DD: perturbed early-stage pool members; IDC mode: fresh random networks, no perturbation.
MODES = (("Acc-DD", {"model_source": "pool", "perturb": True}), ("IDC mode", {"model_source": "random", "perturb": False}))


@dataclass
class BenchmarkConfig:
    """A config file's ``model`` and ``data`` sections, the evaluation schedule and the set-up data.

    ``evaluation`` is the config's evaluation section as written (after overrides) and
    ``eval_net`` the network it names, or None when evaluation uses the distillation network.
    """

    model: dict
    data: dict
    schedule: TrainSchedule
    net: NetSpec
    datamodule: RealDataModule
    evaluation: dict = field(default_factory=dict)
    eval_net: NetSpec | None = None


def apply_overrides(config: dict, overrides: list[str] | None) -> dict:
    """A copy of ``config`` with ``section.key[.sub]=value`` overrides applied (values parsed as YAML).

    Benchmarks vary one setting of a config (``model.lr_img=0.02``, ``evaluation.epochs=100``)
    without a copy of the file, and the override is recorded in the command of the results.
    """
    config = yaml.safe_load(yaml.safe_dump(config))  # deep copy of plain data
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. model.lr_img=0.02)")
        target = config
        for part in parts[:-1]:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section of the config; override the whole value instead")
            target = child
        target[parts[-1]] = yaml.safe_load(raw)
    return config


def evaluation_settings(section: dict, eval_epochs: int | None) -> tuple[TrainSchedule, NetSpec | None]:
    """The training schedule and network of a config's ``evaluation`` section, read as the CLI reads it.

    The section is handed to :class:`~lightning_dd.callbacks.SyntheticEvaluation` itself, so a
    benchmark trains evaluation networks exactly as ``lightning-dd fit`` would with that config.
    Epochs default to 300 when the section has none (the CLI's default is the paper's 1000).
    """
    accepted = set(inspect.signature(SyntheticEvaluation).parameters) - {"net", "progress"}
    unknown = sorted(set(section) - accepted - {"net"})
    if unknown:
        raise ConfigError(f"evaluation.{unknown[0]} is not a setting of the evaluation section; use one of {', '.join(sorted(accepted))}")
    kwargs = {k: v for k, v in section.items() if k in accepted}
    kwargs["epochs"] = eval_epochs or section.get("epochs", 300)
    net = section.get("net")
    net = NetSpec(**net) if isinstance(net, dict) else net
    return SyntheticEvaluation(**kwargs, progress=False).schedule, net


def load_config(path: str, eval_epochs: int | None, threads: int, overrides: list[str] | None = None) -> BenchmarkConfig:
    """Read ``path`` (with ``overrides``); evaluation epochs default to the config's ``evaluation.epochs`` (300 if absent)."""
    torch.set_num_threads(threads)
    os.environ.setdefault("LIGHTNING_DD_QUIET", "1")
    config = apply_overrides(yaml.safe_load(Path(path).read_text()), overrides)
    model, data, evaluation = config["model"], config.get("data", {}), config.get("evaluation", {}) or {}
    schedule, eval_net = evaluation_settings(evaluation, eval_epochs)
    datamodule = RealDataModule(**data)
    datamodule.setup()
    return BenchmarkConfig(model, data, schedule, NetSpec(**model.get("net", {})), datamodule, evaluation, eval_net)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value), as every results table reports them."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def accelerator(device: str | torch.device) -> str:
    """Lightning's accelerator name for a torch device (``cuda`` -> ``gpu``)."""
    return "gpu" if str(device).startswith("cuda") else "cpu"


def gpu_suffix(device: str) -> str:
    """``", GPU <name>"`` when ``device`` is CUDA and a GPU is present, else nothing."""
    return f", GPU {torch.cuda.get_device_name()}" if device == "cuda" and torch.cuda.is_available() else ""


def machine_name(device: str) -> str:
    """Architecture, cores and the GPU in use: kept with results that may be tabulated later, elsewhere."""
    return f"{platform.machine()}, {os.cpu_count()} cores{gpu_suffix(device)}"


def provenance(script: str, argv: list[str] | None, threads: int) -> str:
    """``Command: `...`; machine: ...; date.`` for the end of a benchmark section."""
    command = "python " + shlex.join([script, *(argv if argv is not None else sys.argv[1:])])
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} thread(s), Python {platform.python_version()}{gpu_suffix('cuda')}"
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
