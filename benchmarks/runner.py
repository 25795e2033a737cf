"""What every benchmark does with the library: read a config with overrides, fit, run jobs in parallel, keep results.

Benchmarks run from the repository root as modules (``python -m benchmarks.curve ...``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
import yaml

from lightning_dd import RealDataModule
from lightning_dd.utils.atomic import atomic_open
from lightning_dd.callbacks import SyntheticEvaluation
from lightning_dd.classify import TrainSchedule
from lightning_dd.utils.errors import ConfigError
from lightning_dd.nets import NetSpec

from .report import machine_name

# Acc-DD: perturbed early-stage pool members; IDC mode: fresh random networks, no perturbation.
MODES = (
    ("Acc-DD", {"model_source": "pool", "perturb": True}),
    ("IDC mode", {"model_source": "random", "perturb": False}),
)


@dataclass
class BenchmarkConfig:
    """A config's ``model`` and ``data`` sections, its evaluation (section as written, schedule, network or None) and the set-up data."""

    model: dict
    data: dict
    schedule: TrainSchedule
    net: NetSpec
    datamodule: RealDataModule
    evaluation: dict = field(default_factory=dict)
    eval_net: NetSpec | None = None


def apply_overrides(config: dict, overrides: list[str] | None) -> dict:
    """A copy of ``config`` with ``section.key[.sub]=value`` overrides (values parsed as YAML): one setting varied, no copy of the file."""
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
                raise ConfigError(
                    f"override {item!r}: {part!r} is not a section of the config; override the whole value instead"
                )
            target = child
        target[parts[-1]] = yaml.safe_load(raw)
    return config


def evaluation_settings(section: dict, eval_epochs: int | None) -> tuple[TrainSchedule, NetSpec | None]:
    """A config's evaluation schedule and network, read by :class:`SyntheticEvaluation` itself as ``lightning-dd fit`` reads them (epochs default 300)."""
    accepted = set(inspect.signature(SyntheticEvaluation).parameters) - {"net", "progress"}
    unknown = sorted(set(section) - accepted - {"net"})
    if unknown:
        raise ConfigError(
            f"evaluation.{unknown[0]} is not a setting of the evaluation section; use one of {', '.join(sorted(accepted))}"
        )
    kwargs = {k: v for k, v in section.items() if k in accepted}
    if eval_epochs or "protocol" not in section:
        kwargs["epochs"] = eval_epochs or section.get("epochs", 300)
    net = section.get("net")
    evaluation = SyntheticEvaluation(**kwargs, net=NetSpec(**net) if isinstance(net, dict) else net, progress=False)
    return evaluation.schedule, evaluation.net


def load_config(
    path: str, eval_epochs: int | None, threads: int, overrides: list[str] | None = None
) -> BenchmarkConfig:
    """Read ``path`` (with ``overrides``) and set up its data; evaluation epochs default to the config's (300 if absent)."""
    torch.set_num_threads(threads)
    os.environ.setdefault("LIGHTNING_DD_QUIET", "1")
    config = apply_overrides(yaml.safe_load(Path(path).read_text()), overrides)
    model, data, evaluation = config["model"], config.get("data", {}), config.get("evaluation", {}) or {}
    schedule, eval_net = evaluation_settings(evaluation, eval_epochs)
    datamodule = RealDataModule(**data)
    datamodule.setup()
    return BenchmarkConfig(model, data, schedule, NetSpec(**model.get("net", {})), datamodule, evaluation, eval_net)


def accelerator(device: str | torch.device) -> str:
    """Lightning's accelerator name for a torch device (``cuda`` -> ``gpu``)."""
    return "gpu" if str(device).startswith("cuda") else "cpu"


def trainer(device: str | torch.device = "cpu", **kwargs):
    """A quiet ``lightning.Trainer`` for one distillation: no logger, checkpoints, progress bar or summary; runs until the module stops."""
    import lightning as L

    options = dict(
        accelerator=accelerator(device),
        devices=1,
        max_epochs=-1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**options, **kwargs})


def parallel_map(
    function: Callable,
    tasks: Iterable,
    jobs: int,
    fresh: bool = False,
    initializer: Callable | None = None,
    initargs: tuple = (),
) -> Iterator:
    """``function(task)`` per task, results as they finish: one job here, more in spawned interpreters with one torch thread each
    (unless ``initializer`` sets its own); ``fresh`` gives every task a new process, its peak memory and torch state its own."""
    tasks = list(tasks)
    if not fresh and (jobs <= 1 or len(tasks) <= 1):
        if initializer is not None:
            initializer(*initargs)
        yield from map(function, tasks)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(
        max(1, min(jobs, len(tasks))),
        initializer=initializer or torch.set_num_threads,
        initargs=initargs if initializer else (1,),
        maxtasksperchild=1 if fresh else None,
    ) as pool:
        yield from pool.imap_unordered(function, tasks)


def write_json(path: Path, data) -> None:
    with atomic_open(path, "w") as handle:
        json.dump(data, handle, indent=1)


def read_json(path: Path, default=None):
    return json.loads(path.read_text()) if path.exists() else default


def digest(settings) -> str:
    """A short, stable name for settings (or any JSON-able value)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


class ResultStore:
    """Finished units of work as JSON lines with their machine, rewritten atomically; keyed by ``key_fields``, so :meth:`todo` resumes a
    killed study. With ``settings``, rows record their digest and a file of other settings is refused: experiments never mix."""

    def __init__(self, path: str | Path, key_fields: tuple[str, ...], settings: dict | None = None) -> None:
        self.path, self.key_fields = Path(path), key_fields
        self.settings = None if settings is None else digest(settings)
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        self._rows = list(
            {self.key(row): row for row in map(json.loads, filter(str.strip, lines))}.values()
        )  # a later line replaces an earlier one
        other = {r.get("settings") for r in self._rows} - {self.settings} if self.settings else set()
        if other:
            raise ConfigError(
                f"{self.path} holds results of other settings; pass another results file or the same settings"
            )

    def key(self, row: dict) -> tuple:
        return tuple(row.get(f) for f in self.key_fields)

    def rows(self, **where) -> list[dict]:
        return [r for r in self._rows if all(r.get(k) == v for k, v in where.items())]

    def todo(self, tasks: Iterable[dict]) -> list[dict]:
        done = {self.key(r) for r in self._rows}
        return [t for t in tasks if self.key(t) not in done]

    def add(self, row: dict, device: str = "cpu") -> dict:
        row = {
            **row,
            "machine": row.get("machine") or machine_name(device),
            **({"settings": self.settings} if self.settings else {}),
        }
        self._rows = [r for r in self._rows if self.key(r) != self.key(row)] + [row]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.path, "w") as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in self._rows))
        return row
