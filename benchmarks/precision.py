"""Does ``precision: bf16`` distil as well as fp32? Accuracy of the distilled sets over seeds.

bf16 autocast changes the numerics of matching (4-9 % relative error on the pixel gradient in
``benchmarks/throughput.py``), so its speed only counts if the distilled set is as good. For
every seed, this distils the config's setting once in fp32 and once in bf16 (same seed: same data
order, networks and augmentation draws), evaluates both sets with the same evaluation networks,
and reports the per-seed accuracies, their mean +- std and the mean paired difference. It also
reports each run's distillation seconds and whether the machine's CPU has bf16 units (bf16 on a
CPU without them is emulated and far slower; the accuracy comparison is still valid there).

    python benchmarks/precision.py --config configs/digits/ipc1.yaml --seeds 0 1 2
    python benchmarks/precision.py --config configs/digits/ipc1.yaml --jobs 6 --threads 2   # runs in parallel

Results go to a section of docs/benchmarks.md (between markers), with the command and machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import accelerator, load_config, provenance, write_section  # noqa: E402

from lightning_dd.hardware import cpu_bf16_units  # noqa: E402

PRECISIONS = ("32", "bf16")
TOLERANCE_POINTS = 1.0


def run_one(config: str, seed: int, precision: str, eval_epochs: int | None, repeats: int, threads: int, device: str) -> dict:
    """Distil with ``seed`` and ``precision``, evaluate the decoded set; returns accuracies and seconds."""
    import lightning as L

    from lightning_dd import DistillModule
    from lightning_dd.evaluation import evaluate_repeats

    cfg = load_config(config, eval_epochs, threads)
    settings = {**cfg.model, "seed": seed, "precision": precision}
    started = time.perf_counter()
    module = DistillModule(**settings)
    trainer = L.Trainer(
        accelerator=accelerator(device),
        devices=1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    L.seed_everything(seed, verbose=False)
    trainer.fit(module, datamodule=cfg.datamodule)  # loaded once, by load_config
    seconds = time.perf_counter() - started
    images, labels = module.decoded()
    # The evaluation networks depend on the seed only, so both precisions meet the same ones.
    result = evaluate_repeats(f"seed {seed} {precision}", images, labels, cfg.datamodule.test_data, cfg.net, cfg.schedule, repeats, 1000 * seed, device, progress=False)
    return {"seed": seed, "precision": precision, "accuracies": result.accuracies, "mean": result.mean, "seconds": seconds, "dataset": cfg.datamodule.info.name, "ipc": cfg.model["ipc"], "epochs": cfg.schedule.epochs, "net": cfg.net}


def summarise(runs: list[dict], seeds: list[int]) -> tuple[list[str], float, float]:
    """Markdown rows per seed plus the mean paired difference (bf16 - fp32) and its largest absolute value."""
    by = {(r["seed"], r["precision"]): r for r in runs}
    lines = ["| seed | fp32 accuracy % | bf16 accuracy % | bf16 - fp32 (points) | fp32 s | bf16 s |", "|---:|---:|---:|---:|---:|---:|"]
    diffs = []
    for s in seeds:
        a, b = by[(s, "32")], by[(s, "bf16")]
        diffs.append(b["mean"] - a["mean"])
        lines.append(f"| {s} | {a['mean']:.2f} | {b['mean']:.2f} | {diffs[-1]:+.2f} | {a['seconds']:.0f} | {b['seconds']:.0f} |")
    means = {p: [by[(s, p)]["mean"] for s in seeds] for p in PRECISIONS}
    spread = {p: statistics.stdev(v) if len(v) > 1 else 0.0 for p, v in means.items()}
    mean_diff = statistics.fmean(diffs)
    lines.append(
        f"| mean +- std | {statistics.fmean(means['32']):.2f} +- {spread['32']:.2f} | {statistics.fmean(means['bf16']):.2f} +- {spread['bf16']:.2f} | {mean_diff:+.2f} | | |"
    )
    return lines, mean_diff, max(abs(d) for d in diffs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="config whose data and model sections are distilled")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="distillation seeds (default 0 1 2)")
    parser.add_argument("--eval_epochs", type=int, default=None, help="evaluation epochs (default: the config's)")
    parser.add_argument("--repeats", type=int, default=3, help="evaluation networks per distilled set")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (separate processes)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--output", default="docs/benchmarks.md")
    args = parser.parse_args(argv)
    if len(args.seeds) < 1 or args.jobs < 1 or args.repeats < 1:
        parser.error("need at least one seed, one job and one evaluation repeat")
    tasks = [(args.config, s, p, args.eval_epochs, args.repeats, args.threads, args.device) for s in args.seeds for p in PRECISIONS]
    started = time.perf_counter()
    if args.jobs == 1:
        runs = [run_one(*t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            runs = list(pool.map(run_one, *zip(*tasks)))
    for r in runs:
        print(f"seed {r['seed']} precision {r['precision']}: {r['mean']:.2f} % ({r['seconds']:.0f} s)", flush=True)
    lines, mean_diff, worst = summarise(runs, args.seeds)
    first = runs[0]
    verdict = "within" if abs(mean_diff) <= TOLERANCE_POINTS else "NOT within"
    body = "\n".join(
        [
            f"### {first['dataset']}, ipc {first['ipc']}: distilled-set accuracy, fp32 vs bf16 autocast ({len(args.seeds)} seeds)",
            "",
            *lines,
            "",
            f"Mean paired difference {mean_diff:+.2f} points ({verdict} {TOLERANCE_POINTS:g} point); largest per-seed difference {worst:.2f} points.",
            f"Evaluation: {first['net'].name} (depth {first['net'].depth}, width {first['net'].width}), {first['epochs']} epochs, "
            f"final-epoch test accuracy, mean over {args.repeats} networks per set (the same networks for both precisions). "
            f"Seconds are each run's distillation wall time with {args.threads} thread(s), {args.jobs} run(s) at a time; "
            f"CPU bf16 units: {', '.join(cpu_bf16_units()) or 'none'}; total {time.perf_counter() - started:.0f} s.",
            provenance("benchmarks/precision.py", argv, args.threads),
        ]
    )
    print(body)
    write_section(Path(args.output), f"precision-{first['dataset']}-ipc{first['ipc']}", body)


if __name__ == "__main__":
    main()
