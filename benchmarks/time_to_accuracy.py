"""Time to accuracy: Acc-DD vs IDC mode, evaluated at fixed wall-clock checkpoints.

Both modes distil the same data with the same settings (from a config's ``model`` section) for
the same wall-clock time, measured from the start of fit (Acc-DD's pool pretraining included).
The synthetic set is snapshotted at each checkpoint and every snapshot is evaluated afterwards
with the same protocol. The speed-up at equal accuracy is, for each Acc-DD checkpoint, the
time IDC mode needed to reach that accuracy (linear interpolation between its checkpoints)
divided by Acc-DD's time; "not reached" means IDC mode never got there within the budget.

    python benchmarks/time_to_accuracy.py --config configs/digits/ipc1.yaml --checkpoints 30,60,120,240
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
from lightning_dd.evaluation import evaluate_repeats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODES, load_config, provenance, write_section  # noqa: E402


class Snapshots(Callback):
    """Copies the decoded synthetic set when each wall-clock checkpoint passes; stops after the last."""

    def __init__(self, checkpoints: list[float], started: float) -> None:
        self.pending, self.started = sorted(checkpoints), started
        self.taken: list[tuple[float, int, torch.Tensor, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        elapsed = time.perf_counter() - self.started
        while self.pending and elapsed >= self.pending[0]:
            images, labels = pl_module.decoded()
            self.taken.append((self.pending.pop(0), trainer.global_step, images, labels))
        if not self.pending:
            trainer.should_stop = True


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """First time a piecewise-linear accuracy curve (sorted by time) reaches ``target``."""
    previous = (0.0, float("-inf"))
    for t, acc in curve:
        if acc >= target:
            if previous[1] == float("-inf"):
                return t
            t0, a0 = previous
            return t0 + (t - t0) * (target - a0) / (acc - a0) if acc > a0 else t
        previous = (t, acc)
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoints", default="30,60,120,240", help="wall-clock seconds, comma-separated")
    parser.add_argument("--eval_epochs", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default="docs/benchmarks.md")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.eval_epochs, args.threads)
    model, data, schedule, net, dm = cfg.model, cfg.data, cfg.schedule, cfg.net, cfg.datamodule
    checkpoints = [float(c) for c in args.checkpoints.split(",")]
    curves: dict[str, list[tuple[float, float, float, int]]] = {}
    for mode, overrides in MODES:
        cache = tempfile.mkdtemp(prefix="ldd-tta-")  # Acc-DD pays for its pool inside the budget
        try:
            settings = {**model, **overrides, "outer_iterations": 100_000}
            settings["pool"] = {**settings.get("pool", {}), "cache_dir": cache}
            snapshots = Snapshots(checkpoints, time.perf_counter())
            snapshots.started = time.perf_counter()
            trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[snapshots])
            trainer.fit(DistillModule(**settings), datamodule=RealDataModule(**data))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        curve = []
        for seconds, steps, images, labels in snapshots.taken:
            result = evaluate_repeats(mode, images, labels, dm.test_data, net, schedule, args.repeats, 0, "cpu", progress=False)
            curve.append((seconds, result.mean, result.std, steps))
            print(f"{mode} at {seconds:.0f} s ({steps} steps): {result.mean:.2f} +- {result.std:.2f}", flush=True)
        curves[mode] = curve
    idc_curve = [(t, m) for t, m, _, _ in curves["IDC mode"]]
    lines = [
        f"### Time to accuracy: {dm.info.name}, ipc {model['ipc']}, factor {model.get('factor', 2)}",
        "",
        "| wall-clock (s) | Acc-DD steps | Acc-DD acc (%) | IDC steps | IDC acc (%) | IDC time to Acc-DD's acc | speed-up |",
        "|---:|---:|---|---:|---|---|---|",
    ]
    for (t, m, s, steps), (_, mi, si, steps_i) in zip(curves["Acc-DD"], curves["IDC mode"]):
        reach = time_to_reach(idc_curve, m)
        reach_text, speed = ("not reached", f"> {checkpoints[-1] / t:.1f}x") if reach is None else (f"{reach:.0f} s", f"{reach / t:.2f}x")
        lines.append(f"| {t:.0f} | {steps} | {m:.2f} +- {s:.2f} | {steps_i} | {mi:.2f} +- {si:.2f} | {reach_text} | {speed} |")
    table = "\n".join(lines)
    print(table)
    body = "\n".join(
        [
            table,
            "",
            f"Evaluation: ConvNet (depth {net.depth}, width {net.width}), {schedule.epochs} epochs, DSA + CutMix, final-epoch test "
            f"accuracy, mean +- std over {args.repeats} networks per checkpoint. Acc-DD's time includes pretraining its pool.",
            provenance("benchmarks/time_to_accuracy.py", argv, args.threads),
        ]
    )
    write_section(Path(args.output), f"tta-{dm.info.name}-ipc{model['ipc']}", body)


if __name__ == "__main__":
    main()
