"""Accuracy at equal wall-clock budget: Acc-DD vs IDC mode vs random real subsets.

For each IPC, Acc-DD (early-stage pool, pretraining counted in the budget) and IDC mode (fresh
random networks, no perturbation) distil for the same wall-clock budget, measured from the start
of fit; the final sets and random real subsets of the same size are then evaluated with the same
code. Settings come from a config file's ``model`` section (e.g. the CPU-budget configs).

    python benchmarks/budget.py --config configs/fashion_mnist/ipc1_cpu.yaml --budget_min 6

With ``--pool_cache DIR`` the pool is built (timed, reported) before the budgeted runs and
excluded from the budget, as when one cached pool serves every IPC and rerun; without it
Acc-DD pays for pretraining inside its budget.

Results go to a section of docs/benchmarks.md (between markers), with the command and machine.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lightning_dd import DistillModule, RealDataModule
from lightning_dd.distill.pool import EarlyStagePool, PoolConfig
from lightning_dd.evaluation import EvalResult, evaluate_random_subsets, evaluate_repeats, format_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODES, load_config, provenance, write_section  # noqa: E402


class StopAfter(Callback):
    """Stops distillation once ``seconds`` have passed since fit started (pool pretraining included)."""

    def __init__(self, seconds: float, started: float) -> None:
        self.seconds, self.started = seconds, started
        self.steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        if time.perf_counter() - self.started >= self.seconds:
            trainer.should_stop = True


def distil(model_settings: dict, data: dict, budget_s: float, cache_dir: str) -> tuple[DistillModule, StopAfter, float]:
    settings = dict(model_settings)
    settings["pool"] = {**settings.get("pool", {}), "cache_dir": cache_dir}
    settings["outer_iterations"] = 100_000  # the budget ends the run
    started = time.perf_counter()
    module = DistillModule(**settings)
    stopper = StopAfter(budget_s, started)
    trainer = L.Trainer(
        max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[stopper]
    )
    trainer.fit(module, datamodule=RealDataModule(**data))
    return module, stopper, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="config whose data and model sections are used")
    parser.add_argument("--budget_min", type=float, default=6.0, help="wall-clock minutes per distillation run")
    parser.add_argument("--eval_epochs", type=int, default=None, help="evaluation epochs (default: the config's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default="docs/benchmarks.md")
    parser.add_argument(
        "--pool_cache",
        default=None,
        help="pool cache folder: the pool is pretrained (timed) or loaded before the budgeted runs and NOT counted in "
        "the budget, as when one cached pool serves many runs; default: a fresh folder, pretraining counted",
    )
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.eval_epochs, args.threads)
    model, data, schedule, net, dm = cfg.model, cfg.data, cfg.schedule, cfg.net, cfg.datamodule
    rows: list[EvalResult] = []
    notes = []
    cache = args.pool_cache or tempfile.mkdtemp(prefix="ldd-budget-")  # empty: Acc-DD pays for its pool inside the budget
    if args.pool_cache:
        started = time.perf_counter()
        pool_config = PoolConfig(**{**model.get("pool", {}), "cache_dir": cache})
        EarlyStagePool.build_or_load(net, pool_config, dm.train_data, model.get("seed", 0), progress=False)
        notes.append(f"pool of {pool_config.size} nets x {pool_config.epochs} epoch(s) built or loaded once in {time.perf_counter() - started:.0f} s, outside the budget")
    try:
        for mode, overrides in MODES:
            module, stopper, elapsed = distil({**model, **overrides}, data, args.budget_min * 60, cache)
            images, labels = module.decoded()
            row = evaluate_repeats(f"{mode}, {module.outer} outer + {module.inner} inner", images, labels, dm.test_data, net, schedule, args.repeats, 0, "cpu", progress=False)
            rows.append(row)
            notes.append(f"{mode}: {stopper.steps} matching steps in {elapsed:.0f} s")
            print(f"{mode}: {row.mean:.2f} +- {row.std:.2f} ({notes[-1]})", flush=True)
    finally:
        if not args.pool_cache:
            shutil.rmtree(cache, ignore_errors=True)
    rows.append(evaluate_random_subsets(model["ipc"], dm.train_data, dm.test_data, net, schedule, args.repeats, 0, "cpu", progress=False))
    title = f"### {dm.info.name}, ipc {model['ipc']}, factor {model.get('factor', 2)}: {args.budget_min:g} minutes of distillation each"
    table = format_table(rows, title)
    print(table)
    body = "\n".join(
        [
            table,
            "",
            f"{'The budget excludes the cached pool' if args.pool_cache else 'The budget includes Acc-DD pool pretraining'}. {'; '.join(notes)}.",
            f"Evaluation: ConvNet (depth {net.depth}, width {net.width}), {schedule.epochs} epochs, SGD lr 0.01, DSA + CutMix, "
            f"final-epoch test accuracy, mean +- std over {args.repeats} networks (random subsets: {args.repeats} draws).",
            provenance("benchmarks/budget.py", argv, args.threads),
        ]
    )
    marker = f"budget-{dm.info.name}-ipc{model['ipc']}"
    write_section(Path(args.output), marker, body)


if __name__ == "__main__":
    main()
