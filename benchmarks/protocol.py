"""Effect of each training-protocol setting (or any candidate setting) on the distilled set, at equal iterations.

The configs follow the authors' protocol; each *variant* puts some settings back to what lightning-dd used before (``previous``: all of them), each ``--candidate NAME=section.key=value;...``
changes what it lists (e.g. ``bf16=model.precision=bf16``). Every run distils from the same seed for the same iterations (or ``--max_minutes``), and every set is evaluated by the config's
evaluation on the same networks, so the paired difference to ``paper`` (same seed) is the setting's effect; ``--random_real`` adds random real images of the same storage as the bar.

    python -m benchmarks.protocol --config configs/fashion_mnist/ipc10_cpu_mix.yaml --outer 8 --seeds 0 1 2 --eval_epochs 100 --jobs 2 --threads 1

Results go to ``--results`` (JSON lines) as they arrive, so a rerun resumes; pools are cached.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import lightning as L

from lightning_dd import DistillModule
from lightning_dd.evaluation import evaluate_random_subsets, evaluate_repeats
from lightning_dd.utils.hardware import cpu_bf16_units
from lightning_dd.set_format import save_distilled, to_jsonable

from .report import cell, machine_name, mean_std, provenance, write_section
from .runner import ResultStore, load_config, parallel_map, trainer

# name -> (what it reverts, overrides relative to a config on the authors' protocol)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "paper": ("nothing: the authors' protocol", []),
    "net_batch": ("network update in batches of 128", ["model.net_batch_size=128"]),
    "net_augment": (
        "network update: every spatial transform on every batch, cutout kept under CutMix",
        ["model.net_spatial=all", "model.net_cutout_with_cutmix=true"],
    ),
    "pool": (
        "pool pretraining: batches of 128, colour/crop/cutout/scale/rotate all on every batch",
        [
            "model.pool.batch_size=128",
            "model.pool.augment=color_crop_cutout_scale_rotate",
            "model.pool.spatial=all",
            "model.pool.cutout_with_cutmix=true",
        ],
    ),
    "clamp": ("pixels clamped after every image step", ["model.clamp=per_step"]),
    "image_step": ("one image step per inner iteration (sum over classes)", ["model.image_step=per_iteration"]),
}
VARIANTS["previous"] = (
    "all of them: net batch 128, all transforms and cutout in the update, the earlier pool, clamp per step, one image step per iteration",
    [o for name, (_, overrides) in VARIANTS.items() if name != "paper" for o in overrides],
)
# Found later, so not part of ``previous`` (whose recorded runs predate them).
LATER_VARIANTS: dict[str, tuple[str, list[str]]] = {
    "mix_downsample": (
        "mix init: real images shrunk into tiles bilinearly with antialiasing",
        ["model.mix_downsample=antialias"],
    ),
    "net_whole_batches": (
        "network update on exactly n_data images, the last batch smaller",
        ["model.net_whole_batches=false"],
    ),
}
VARIANTS.update(LATER_VARIANTS)
EVAL_SEED = 1000  # the same evaluation networks for every variant and distillation seed
RANDOM_REAL = "random real"  # not a distillation: random real images of the same storage, same evaluation


def run_one(job: dict) -> dict:
    """Distil one (variant, seed) for ``outer`` outer iterations and evaluate the final set."""
    # The variant's own overrides come last, so a candidate may set its own outer iterations.
    overrides = [
        f"model.outer_iterations={job['outer']}",
        f"model.seed={job['seed']}",
        f"model.pool.cache_dir={job['pool_cache']}",
        *job["extra"],
        *job["overrides"],
    ]
    cfg = load_config(job["config"], job["eval_epochs"], job["threads"], overrides)
    if job["variant"] == RANDOM_REAL:
        return random_real_row(job, cfg)
    L.seed_everything(job["seed"], verbose=False)
    module = DistillModule(**cfg.model)
    device = job["device"]
    limit = {"max_time": {"minutes": job["max_minutes"]}} if job.get("max_minutes") else {}
    started, cpu_started = time.perf_counter(), time.process_time()
    trainer(device, **limit).fit(module, datamodule=cfg.datamodule)  # set up once by load_config
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if job.get(
        "save_sets"
    ):  # the set itself, for later evaluations (benchmarks.ranking, evaluate --protocol published)
        stored, stored_labels = module.distilled()
        config = {"model": to_jsonable(dict(module.hparams)), "data": cfg.data, "evaluation": cfg.evaluation}
        save_distilled(
            Path(job["save_sets"]) / f"{job['variant']}-seed{job['seed']}.pt",
            stored,
            stored_labels,
            module.hparams.factor,
            cfg.datamodule.info,
            config,
        )
    images, labels = module.decoded()
    eval_started = time.process_time()
    result = evaluate_repeats(
        job["variant"],
        images,
        labels,
        cfg.datamodule.test_data,
        cfg.eval_net or cfg.net,
        cfg.schedule,
        job["repeats"],
        EVAL_SEED,
        device,
        progress=False,
        val=cfg.datamodule.val_data,
    )
    row = {
        "variant": job["variant"],
        "seed": job["seed"],
        "device": device,
        "machine": machine_name(device),
        "outer": module.outer,
        "inner_loop": module.hparams.inner_loop,
        "steps": module.outer * module.hparams.inner_loop + module.inner,
        "fit_seconds": seconds,
        "fit_cpu_seconds": cpu_seconds,
        "eval_cpu_seconds": time.process_time() - eval_started,
    }
    return {**row, **scores(result)}


def scores(result) -> dict:
    """A row's accuracies: test, and validation when the config holds a split out (the one to choose on)."""
    row = {"accuracies": result.accuracies, "mean": result.mean, "epochs": result.epochs}
    return (
        {**row, "val_accuracies": result.val_accuracies, "val_mean": result.val_mean} if result.val_accuracies else row
    )


def random_real_row(job: dict, cfg) -> dict:
    """Random real subsets of the config's ipc under the same evaluation: the bar a set must clear."""
    data, device = cfg.datamodule, job["device"]
    started = time.process_time()
    result = evaluate_random_subsets(
        cfg.model["ipc"],
        data.train_data,
        data.test_data,
        cfg.eval_net or cfg.net,
        cfg.schedule,
        job["repeats"],
        EVAL_SEED + 100 * job["seed"],
        device,
        progress=False,
        val=data.val_data,
    )
    return {
        "variant": RANDOM_REAL,
        "seed": job["seed"],
        "device": device,
        "machine": machine_name(device),
        "outer": 0,
        "inner_loop": 0,
        "fit_seconds": 0.0,
        "eval_cpu_seconds": time.process_time() - started,
        **scores(result),
    }


def parse_candidate(text: str) -> tuple[str, list[str]]:
    """``name=section.key=value;section.key=value`` -> (name, overrides): a variant given on the command line."""
    name, sep, rest = text.partition("=")
    overrides = [o.strip() for o in rest.split(";") if o.strip()]
    if not sep or not name.strip() or not overrides or name.strip() in VARIANTS:
        raise argparse.ArgumentTypeError(
            f"--candidate {text!r} must look like NAME=section.key=value[;section.key=value...] with a new NAME"
        )
    return name.strip(), overrides


def chosen_variant(rows: list[dict], variants: list[str]) -> str | None:
    """The variant (random real aside) with the highest validation accuracy, mean over its seeds; None unless every run has one.

    Test accuracy plays no part: it is read once, for the variant chosen here.
    """
    mine = {name: [r.get("val_mean") for r in rows if r["variant"] == name] for name in variants if name != RANDOM_REAL}
    mine = {name: vals for name, vals in mine.items() if vals}
    if not mine or any(v is None for vals in mine.values() for v in vals):
        return None
    return max(mine, key=lambda name: sum(mine[name]) / len(mine[name]))


def summarise(rows: list[dict], variants: list[str], described: dict[str, str] | None = None) -> str:
    """Markdown table: per variant, accuracy over seeds, the paired difference to ``paper`` and to random real images.

    With a validation split every figure that compares variants is validation accuracy, the chosen
    variant is marked, and the test column gives the chosen one's test accuracy (the others' are
    marked as read after the choice). Without one the table compares test accuracy and chooses nothing.
    """
    described = {
        **{k: v[0] for k, v in VARIANTS.items()},
        RANDOM_REAL: "random real images, same storage (the bar)",
        **(described or {}),
    }
    chosen = chosen_variant(rows, variants)
    key, split = ("val_mean", "validation") if chosen else ("mean", "test")
    by = {(r["variant"], r["seed"]): r for r in rows}
    bar = any(r["variant"] == RANDOM_REAL for r in rows)
    lines = [f"| variant | what it changes | seeds | steps | {split} accuracy (%) | paired diff. to paper (points) |" + (" vs random real (points) |" if bar else "") + (" test accuracy (%) |" if chosen else "") + " fit s/run |",
             "|---|---|---:|---:|---|---|" + ("---|" if bar else "") + ("---|" if chosen else "") + "---:|"]  # fmt: skip
    for name in variants:
        mine = sorted((r for r in rows if r["variant"] == name), key=lambda r: r["seed"])
        if not mine:
            continue
        cells = []
        for other in ("paper", RANDOM_REAL) if bar else ("paper",):
            diffs = [r[key] - by[(other, r["seed"])][key] for r in mine if (other, r["seed"]) in by]
            cells.append(
                ""
                if name in (other, RANDOM_REAL) or not diffs
                else "{:+.2f} +- {:.2f} (n={})".format(*mean_std(diffs), len(diffs))
            )
        if chosen:
            test = cell([r["mean"] for r in mine], count=False)
            cells.append(f"**{test}** (chosen)" if name == chosen else f"{test} (read after the choice)")
        steps = (
            ""
            if name == RANDOM_REAL
            else "/".join(sorted({str(r.get("steps", r["outer"] * r["inner_loop"])) for r in mine}, key=int))
        )
        seconds = sum(r["fit_seconds"] for r in mine) / len(mine)
        lines.append(
            f"| {name} | {described.get(name, '')} | {len(mine)} | {steps} | {cell([r[key] for r in mine], count=False)} | {' | '.join(cells)} | {seconds:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        required=True,
        help="a config on the authors' protocol (e.g. configs/fashion_mnist/ipc10_cpu_mix.yaml)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        choices=list(VARIANTS),
        help="built-in variants (default: all, or none when --candidate is given)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--outer", type=int, default=8, help="outer iterations per run (equal for every variant)")
    parser.add_argument(
        "--max_minutes",
        type=float,
        default=None,
        help="also stop each fit after this many wall-clock minutes of distillation (a CPU budget; pool pretraining comes before the clock)",
    )
    parser.add_argument("--eval_epochs", type=int, default=None, help="evaluation epochs (default: the config's)")
    parser.add_argument("--repeats", type=int, default=3, help="evaluation networks per set")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where runs distil and evaluate; keep one device per --results file",
    )
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        type=parse_candidate,
        metavar="NAME=KEY=VALUE[;KEY=VALUE]",
        help="an ad-hoc variant: a name and its overrides (may set model.outer_iterations); repeatable",
    )
    parser.add_argument(
        "--random_real",
        action="store_true",
        help="also evaluate random real subsets of the same storage (one row per seed, --repeats draws)",
    )
    parser.add_argument(
        "--set", dest="extra", action="append", default=[], help="extra override section.key=value for every run"
    )
    parser.add_argument("--results", default="docs/protocol-runs.jsonl")
    parser.add_argument(
        "--save_sets", default=None, metavar="DIR", help="also write each distilled set to DIR/<variant>-seed<seed>.pt"
    )
    parser.add_argument("--pool_cache", default=os.path.expanduser("~/.cache/lightning-dd/pools"))
    parser.add_argument("--output", default="docs/benchmarks.md")
    parser.add_argument(
        "--note",
        default="",
        help="a sentence printed under the table (e.g. where the runs ran, what shared the machine)",
    )
    parser.add_argument(
        "--section",
        default=None,
        help="marker of the docs section (default protocol-<config name>, with -cuda on CUDA)",
    )
    parser.add_argument("--no_doc", action="store_true", help="print the table but do not write it to --output")
    args = parser.parse_args(argv)
    candidates = dict(args.candidate)
    overrides_of = {**{k: v[1] for k, v in VARIANTS.items()}, **candidates, RANDOM_REAL: []}
    described = {k: "; ".join(f"`{o}`" for o in v) for k, v in candidates.items()}
    if candidates:
        described["paper"] = "nothing: the config as written"
    variants = (
        (args.variants if args.variants is not None else ([] if candidates else list(VARIANTS)))
        + list(candidates)
        + ([RANDOM_REAL] if args.random_real else [])
    )
    store = ResultStore(args.results, ("variant", "seed"))
    if other := sorted({r.get("device", "cpu") for r in store.rows()} - {args.device}):
        parser.error(
            f"{args.results} holds runs on {', '.join(other)}; pass another --results for --device {args.device}"
        )
    base = dict(
        config=args.config,
        outer=args.outer,
        max_minutes=args.max_minutes,
        eval_epochs=args.eval_epochs,
        repeats=args.repeats,
        threads=args.threads,
        pool_cache=args.pool_cache,
        extra=args.extra,
        device=args.device,
        save_sets=args.save_sets,
    )
    # Seed-major order, paper first: paired differences become available as early as possible.
    # Built-in variants are paired with paper, so it always runs with them; candidates run alone unless --variants paper.
    order = (["paper"] if "paper" in variants or not candidates else []) + [v for v in variants if v != "paper"]
    jobs = store.todo([dict(base, variant=v, seed=s, overrides=overrides_of[v]) for s in args.seeds for v in order])
    print(f"{len(store.rows())} run(s) already in {args.results}; {len(jobs)} to go", flush=True)
    for row in parallel_map(run_one, jobs, args.jobs, fresh=True):
        store.add(row, args.device)
        print(f"{row['variant']} seed {row['seed']}: {row['mean']:.2f} % ({row['fit_seconds']:.0f} s)", flush=True)
    rows = [r for r in store.rows() if r["seed"] in args.seeds]
    table = summarise(rows, order, described)
    print(table)
    if not args.no_doc and rows:
        body = "\n\n".join([
            f"### Candidates, {Path(args.config).name}, seed{'s' if len(args.seeds) > 1 else ''} {' '.join(map(str, args.seeds))}" if candidates else f"### Protocol settings, {Path(args.config).name}: {rows[0]['outer']} outer x {rows[0]['inner_loop']} inner iterations per run",
            table,
            ("Each candidate changes the listed settings of the config (`paper` is the config as written); " if candidates else "Each variant reverts the listed settings to lightning-dd's earlier behaviour; ")
            + "the paired difference compares runs "
            f"with the same distillation seed. Every set is evaluated by the config's evaluation section ({args.repeats} networks, "
            f"{args.eval_epochs or 'config'} epochs, the same networks for every run). Fit seconds are wall-clock and include "
            "pool pretraining when the pool cache was cold; compare accuracy, not time."
            + "".join(f" Runs on {m}." for m in sorted({r["machine"] for r in rows if "machine" in r}))
            + (f" Every run also sets {', '.join(f'`{o}`' for o in args.extra)}." if args.extra else "")
            + (f" CPU bf16 units: {', '.join(cpu_bf16_units()) or 'none (bf16 is emulated, slowly)'}." if any("precision=bf16" in o for v in variants for o in overrides_of.get(v, [])) else "")
            + (f" {args.note}" if args.note else ""),
            provenance("protocol", argv, args.threads, args.device),
        ])  # fmt: skip
        write_section(
            Path(args.output),
            args.section or f"protocol-{Path(args.config).stem}" + ("-cuda" if args.device == "cuda" else ""),
            body,
        )


if __name__ == "__main__":
    main()
