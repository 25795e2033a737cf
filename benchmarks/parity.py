"""Parity with the authors' public code: their ``condense`` loop and our DistillModule, side by side.

Both sides distil Fashion-MNIST from the same initial images in IDC mode (a fresh network every outer iteration, no perturbation) and Acc-DD mode (one early-stage pool of ours, handed to
both); OUR evaluator scores every set on the same networks, so the accuracy difference measures the distillation code alone. ``--authors_dir`` names a checkout of
github.com/ncsu-dk-lab/Acc-DD, run unchanged but for :data:`SHIMS`. Results go to ``--out`` as runs finish (rerun to resume)::

    python -m benchmarks.parity --authors_dir /path/to/Acc-DD --seeds 0,1,2 --outer 5 --inner 10 --jobs 2 --out parity.json
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import logging
import math
import os
import platform
import re
import sys
import time
import types
import warnings
from dataclasses import asdict, field, fields, make_dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import LambdaCallback

from lightning_dd import DistillModule, RealDataModule
from lightning_dd.classify import TrainSchedule
from lightning_dd.distill.functional_net import FunctionalNet
from lightning_dd.distill.matching import class_matching_loss, matched_parameter_names
from lightning_dd.distill.pool import EarlyStagePool, PoolConfig
from lightning_dd.distill.synthetic import SyntheticSet, assemble_mix, decode, decode_labels
from lightning_dd.evaluation import evaluate_repeats
from lightning_dd.nets import NetSpec, head_parameter_names

from .authors import SHIMS, AuthorsCode
from .report import code_version, command, cpu_model, gpu_suffix, md_table, mean_std, write_section
from .runner import parallel_map, read_json, trainer, write_json

MODE_NAMES = {"idc": "IDC mode (fresh networks)", "accdd": "Acc-DD (early-stage pool + perturbation)"}
SIDES = ("theirs", "ours")
FASHION = "fashion_mnist"
DEFAULTS = dict(dataset=FASHION, ipc=10, factor=2, depth=3, width=64, outer=5, inner=10, metric="mse", lr_img=0.01, momentum_img=0.5, batch_real=64,
                max_syn_per_class=128, n_data=500, net_lr=0.01, net_momentum=0.9, net_weight_decay=5e-4, mix_p=0.5, augment="color_crop_cutout", rho_min=0.01,
                rho_max=0.09, pool_size=2, pool_epochs=1, pool_seed=0, eval_epochs=100, eval_repeats=3, eval_seed=0, device="cpu")  # fmt: skip
# Everything both sides must share; stored in the results file so a resume cannot mix settings. ``s.net``: the ConvNet of both sides.
Settings = make_dataclass(
    "Settings",
    [(name, type(value), field(default=value)) for name, value in DEFAULTS.items()],
    namespace={
        "__module__": __name__,
        "net": property(lambda s: NetSpec(name="convnet", depth=s.depth, width=s.width)),
    },
)
_WORKER: dict = {}  # per process: our data module and the authors' code, loaded once


def task_name(task: dict) -> str:
    """``mode/side/seedN``: a run's key in the results file (of a task, or of a finished run's record)."""
    return f"{task['mode']}/{task['side']}/seed{task['seed']}"


def load_data(dataset: str, data_dir: str) -> RealDataModule:
    dm = RealDataModule(
        dataset, data_dir=data_dir, source_options={"debian_dir": data_dir} if dataset == FASHION else {}
    )
    dm.setup()
    return dm


def initial_images(s: Settings, real, seed: int) -> torch.Tensor:
    """The stored images both sides start from: our ``mix`` init (factor**2 random real images per image)."""
    syn = SyntheticSet(real.info.num_classes, s.ipc, real.info.channels, real.info.image_size, s.factor)
    syn.initialize("mix", real, torch.Generator().manual_seed(10_000 + seed))
    return syn.images.detach().clone()


def authors_key_pairs(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Our ConvNet's state-dict keys -> their ``models/convnet.py`` keys: ``layers.conv.{d}`` / ``layers.norm.{d}``, ``classifier.*``."""
    layers = sorted({int(key.split(".")[1]) for key in state if key.startswith("features.")})  # the ones with state
    kinds = [{4: "conv", 1: "norm"}.get(state[f"features.{i}.weight"].ndim) for i in layers]
    if kinds != ["conv", "norm"] * (len(layers) // 2):
        raise KeyError(f"feature layers {kinds}: not a ConvNet with one norm after every conv")
    pairs = {key: key for key in state if key.startswith("classifier.")}
    for n, i in enumerate(layers):
        pairs.update(
            {
                key: f"layers.{kinds[n]}.{n // 2}.{key.split('.', 2)[2]}"
                for key in state
                if key.startswith(f"features.{i}.")
            }
        )
    if len(pairs) != len(state):
        raise KeyError(f"unexpected ConvNet state key {next(key for key in state if key not in pairs)!r}")
    return pairs


def to_authors_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # tensors shared, not copied
    return {theirs: state[ours] for ours, theirs in authors_key_pairs(state).items()}


def our_module(s: Settings, mode: str, seed: int) -> DistillModule:
    """Our DistillModule with what it must share with theirs; protocol options keep our defaults."""
    return DistillModule(ipc=s.ipc, factor=s.factor, init="mix", net=s.net, model_source="random" if mode == "idc" else "pool", perturb=mode == "accdd",
                         rho_min=s.rho_min, rho_max=s.rho_max, outer_iterations=s.outer, inner_loop=s.inner, batch_real=s.batch_real, max_syn_per_class=s.max_syn_per_class,
                         metric=s.metric, match="grad", match_bias=False, match_head=False, augment=s.augment, lr_img=s.lr_img, momentum_img=s.momentum_img,
                         n_data=s.n_data, net_lr=s.net_lr, net_momentum=s.net_momentum, net_weight_decay=s.net_weight_decay, net_cutmix_p=s.mix_p, seed=seed)  # fmt: skip


def run_ours(s: Settings, mode: str, seed: int, dm, init: torch.Tensor, pool) -> tuple[torch.Tensor, list[float]]:
    """Our DistillModule from ``init`` (and ``pool`` in Acc-DD mode); returns the stored images and per-outer losses."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available" banners per run
    info, losses = dm.info, []

    def outer_loss(trainer, module, *_) -> None:  # after every training step
        if module.finished_outer:
            losses.append(float(trainer.callback_metrics["distill/outer_loss"]) / info.num_classes)

    module = our_module(s, mode, seed)
    module.pool = pool  # a pool handed in before fit is used as is (Acc-DD mode; None in IDC mode)
    module.synthetic = SyntheticSet(
        info.num_classes, s.ipc, info.channels, info.image_size, s.factor
    )  # attach_data keeps it
    module.synthetic.images.data.copy_(init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(s.device, callbacks=[LambdaCallback(on_train_batch_end=outer_loss)]).fit(module, datamodule=dm)
    if module.outer != s.outer:
        raise RuntimeError(f"our run stopped after {module.outer} of {s.outer} outer iterations")
    return module.synthetic.images.detach().cpu().clone(), losses


def evaluate_stored(s: Settings, dm, stored: torch.Tensor, name: str) -> list[float]:
    """Both sides' stored images get the same treatment: clamp to [0, 1], our decode, our evaluator."""
    images, labels = (
        decode(stored.clamp(0, 1), s.factor),
        decode_labels(torch.arange(dm.info.num_classes).repeat_interleave(s.ipc), s.factor),
    )
    return evaluate_repeats(
        name,
        images,
        labels,
        dm.test_data,
        s.net,
        TrainSchedule(epochs=s.eval_epochs),
        s.eval_repeats,
        s.eval_seed,
        s.device,
        progress=False,
    ).accuracies


def first_step_check(
    s: Settings,
    authors: AuthorsCode,
    dm,
    init: torch.Tensor,
    state: dict[str, torch.Tensor],
    mode: str,
    effective_lr_img: float,
) -> dict:
    """One step of their ``matchloss`` and ours on the same images and weights; also their logits, decode and ``mix`` init against ours."""
    info, f2, train = dm.info, s.factor**2, dm.train_data
    args = authors.args_for(s, mode, effective_lr_img, ["unused"])
    template = s.net.build(info.channels, info.num_classes, info.image_size)
    template.load_state_dict(state)
    theirs = authors.condense.define_model(args, info.num_classes)
    theirs.load_state_dict(to_authors_state(state), strict=True)
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(16, info.channels, *info.image_size, generator=generator)
    logits_diff = float((template(probe) - theirs(probe)).detach().abs().max())
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synset = authors.condense.Synthesizer(args, info.num_classes, info.channels, *info.image_size, device="cpu")
        # mix init: their tile k of stored image m is the class sample's image k * ipc + m, ours m * f2 + k.
        draw = torch.Generator().manual_seed(1)
        samples = {
            c: train.images[train.class_sample_indices(c, s.ipc * f2, draw)].float().div(255.0)
            for c in range(info.num_classes)
        }
        synset.init(
            types.SimpleNamespace(class_sample=lambda c, n: (samples[c][:n], torch.full((n,), c))), init_type="mix"
        )
    order = torch.arange(s.ipc * f2).view(f2, s.ipc).t().flatten()
    init_diff = float(
        (
            synset.data.detach().cpu()
            - torch.cat([assemble_mix(samples[c][order], s.factor, "nearest") for c in samples])
        )
        .abs()
        .max()
    )
    # Decode: theirs orders tiles tile-major (all images' tile 0, then tile 1 ...), ours image-major.
    synset.data.data.copy_(init)
    order = torch.arange(s.ipc * f2).view(s.ipc, f2).t().flatten()
    decode_diff = max(
        float((synset.sample(c, max_size=args.batch_syn_max)[0].detach() - decode(x, s.factor)[order]).abs().max())
        for c, x in enumerate(init.split(s.ipc))
    )
    result = {"mode": mode, "params_ours": sum(p.numel() for p in template.parameters()), "params_theirs": sum(p.numel() for p in theirs.parameters()),
              "logits_max_abs_diff": logits_diff, "decode_max_abs_diff": decode_diff, "init_max_abs_diff": init_diff}  # fmt: skip
    # Matching loss and its pixel gradient, class by class, in fp32 and (to separate rounding from any real difference) in fp64.
    real = train.class_balanced_batch(s.batch_real, generator)
    for dtype, suffix in ((torch.float32, ""), (torch.float64, "_fp64")):
        net, their_net = (
            FunctionalNet(template.to(dtype)),
            theirs.to(dtype),
        )  # converted in place: fp32 first, then fp64
        weights = net.clone_weights(template.state_dict())
        matched = [
            weights[n]
            for n in matched_parameter_names(
                {n: p.shape for n, p in template.named_parameters()}, head_parameter_names(template)
            )
        ]
        loss_theirs = loss_ours = grad_diff = grad_scale = 0.0
        for c, stored in enumerate(init.split(s.ipc)):
            pixels = stored.to(dtype).clone().requires_grad_(True)
            syn, real_c = train.normalizer(decode(pixels, s.factor)).to(dtype), real[c].to(dtype)
            lt = authors.condense.matchloss(
                args, real_c, syn, torch.full((len(real_c),), c), torch.full((len(syn),), c), their_net
            )
            (gt,) = torch.autograd.grad(lt, pixels, retain_graph=True)  # syn's decode graph is reused below
            lo = class_matching_loss(lambda x: net(weights, x), matched, real_c, syn, c, s.metric)
            (go,) = torch.autograd.grad(lo, pixels)
            loss_theirs, loss_ours = loss_theirs + float(lt.detach()), loss_ours + float(lo.detach())
            grad_diff, grad_scale = max(grad_diff, float((gt - go).abs().max())), max(grad_scale, float(gt.abs().max()))
        result.update({f"loss_theirs{suffix}": loss_theirs, f"loss_ours{suffix}": loss_ours,
                       f"loss_rel_diff{suffix}": abs(loss_theirs - loss_ours) / max(abs(loss_theirs), 1e-30),
                       f"pixel_grad_rel_diff{suffix}": grad_diff / max(grad_scale, 1e-30)})  # fmt: skip
    return result


def run_task(payload: dict) -> dict:
    """One run (side, mode, seed) and its evaluation; ``stack_dump_s`` > 0 appends its stacks to ``<work>/stacks/<task>.txt`` that often."""
    with contextlib.ExitStack() as stack:
        if (payload.get("stack_dump_s") or 0) > 0:
            stacks = Path(payload["work"], "stacks")
            stacks.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(open(stacks / f"{task_name(payload['task']).replace('/', '-')}.txt", "a"))
            faulthandler.dump_traceback_later(payload["stack_dump_s"], repeat=True, file=handle)
            stack.callback(faulthandler.cancel_dump_traceback_later)
        return _run_task(payload)


def _run_task(payload: dict) -> dict:
    s, task, work = Settings(**payload["settings"]), payload["task"], Path(payload["work"])
    if not _WORKER:  # a spawned worker: our data and the authors' modules, loaded once per process
        _WORKER.update(
            dm=load_data(s.dataset, payload["data_dir"]),
            authors=AuthorsCode(payload["authors_dir"], s.device) if payload["authors_dir"] else None,
        )
    dm = _WORKER["dm"]
    mode, seed, name = task["mode"], task["seed"], task_name(task).replace("/", "-")
    init = torch.load(work / "init" / f"seed{seed}.pt", weights_only=True)
    seed_everything(seed, verbose=False)
    record, started = {"mode": mode, "side": task["side"], "seed": seed}, time.perf_counter()
    if task["side"] == "ours":
        stored, losses = run_ours(
            s, mode, seed, dm, init, EarlyStagePool.load(payload["pool_file"]) if mode == "accdd" else None
        )
    else:
        stored, lines, args = _WORKER["authors"].condense_run(
            s,
            mode,
            payload["effective_lr_img"],
            payload["authors_pool_files"],
            dm.train_data,
            init,
            work / "authors_out" / name,
        )
        losses = [float(m.group(1)) for m in (re.search(r"loss: ([0-9.eE+-]+)", line) for line in lines) if m]
        record["lr_img"] = args.lr_img
    record.update(distill_s=time.perf_counter() - started, outer_losses=losses)
    torch.save(stored, work / "sets" / f"{name}.pt")
    started = time.perf_counter()
    record["accuracies"] = evaluate_stored(s, dm, stored, task_name(task))
    return {**record, "eval_s": time.perf_counter() - started, "threads": torch.get_num_threads()}


def load_results(path: Path, settings: Settings) -> dict:
    """The results file of an earlier (possibly killed) run with the same settings, or a fresh record."""
    key = asdict(settings)
    results = read_json(path, {"settings": key, "runs": {}, "checks": {}, "sessions": []})
    if results.get("settings") != key:
        changed = sorted(k for k in key if results.get("settings", {}).get(k) != key[k])
        raise SystemExit(
            f"{path} holds results for other settings ({', '.join(changed)} differ); pass another --out or the same settings"
        )
    return results


def _mean(values: list[float]) -> float | None:
    return mean_std(values)[0] if values else None


def summarise(results: dict, modes: list[str], seeds: list[int]) -> list[dict]:
    """Per mode: each side's accuracy (mean +- std over seeds of the per-seed mean) and the paired difference."""
    rows = []
    for mode in modes:
        row: dict = {"mode": mode, "per_seed": {}}
        for side in SIDES:
            runs = {seed: run for seed in seeds if (run := results["runs"].get(f"{mode}/{side}/seed{seed}"))}
            means = row["per_seed"][side] = {seed: _mean(run["accuracies"]) for seed, run in runs.items()}
            row.update(
                {
                    side: mean_std(list(means.values())) if means else None,
                    f"{side}_n": len(means),
                    f"{side}_distill_s": _mean([r["distill_s"] for r in runs.values()]),
                    f"{side}_last_loss": _mean([r["outer_losses"][-1] for r in runs.values() if r["outer_losses"]]),
                }
            )
        paired = [
            row["per_seed"]["ours"][seed] - row["per_seed"]["theirs"][seed]
            for seed in seeds
            if all(seed in row["per_seed"][side] for side in SIDES)
        ]
        rows.append({**row, "paired": [round(d, 2) for d in paired], "diff": mean_std(paired) if paired else None})
    return rows


def init_sentence(results: dict, rows: list[dict], seeds: list[int]) -> str | None:
    """The initial images' accuracy and each side's gain over it (per seed, then averaged; :func:`summarise`'s rows); None before it was measured."""
    init = {seed: _mean(acc) for seed in seeds if (acc := results.get("init_runs", {}).get(str(seed)))}
    if not init:
        return None
    per_mode = {
        MODE_NAMES[row["mode"]].split(" (")[0]: [
            _mean([mean - init[seed] for seed, mean in row["per_seed"][side].items() if seed in init]) for side in SIDES
        ]
        for row in rows
    }
    gains = [
        f"{mode} {' / '.join('-' if g is None else f'{g:+.2f}' for g in per_side)}"
        for mode, per_side in per_mode.items()
    ]
    m, sd = mean_std(list(init.values()))
    return (f"The initial images themselves, evaluated the same way (no distillation): {m:.2f} ± {sd:.2f} % (per seed {', '.join(f'{v:.2f}' for v in init.values())}). "
            f"Gain of the distilled sets over them, mean over seeds, theirs / ours: {'; '.join(gains)} points.")  # fmt: skip


def format_tables(rows: list[dict], checks: dict, s: Settings) -> str:
    """The accuracy table and, when the authors' side ran, the first-step check table."""
    pm = lambda pair, sign="": "-" if pair is None else f"{pair[0]:{sign}.2f} ± {pair[1]:.2f}"  # noqa: E731
    both = lambda row, key, spec: " / ".join(
        "-" if row[f"{side}_{key}"] is None else f"{row[f'{side}_{key}']:{spec}}" for side in SIDES
    )  # noqa: E731
    header = ["mode", "authors' code (%)", "lightning-dd (%)", "ours − theirs, paired by seed", "per seed", "seeds x eval nets",
              "distillation s/run, theirs / ours", "last outer loss per class, theirs (logged to 0.1) / ours"]  # fmt: skip
    table = [[MODE_NAMES[row["mode"]], pm(row["theirs"]), pm(row["ours"]), pm(row["diff"], "+"), ", ".join(f"{d:+.2f}" for d in row["paired"]) or "-",
              f"{row['theirs_n']} / {row['ours_n']} x {s.eval_repeats}", both(row, "distill_s", ".0f"), both(row, "last_loss", ".4g")] for row in rows]  # fmt: skip
    if not checks:
        return md_table(header, table)
    mix = any("init_max_abs_diff" in c for c in checks.values())  # results from before that check have no such column
    sentence = ("First-step loss: one matching step (all classes, no augmentation) of their `matchloss` and ours on the same real batch, the same "
                "synthetic images and the same network weights; their ConvNet loaded with our weights.")  # fmt: skip
    sentence += (
        " `mix` init: their `Synthesizer.init` and ours (`mix_downsample: nearest`) on the same real images."
        if mix
        else ""
    )
    check_header = ["network", "loss, theirs", "loss, ours", "relative difference (fp32 / fp64)", "pixel gradient, max rel. difference (fp32 / fp64)",
                    "logits, max abs. difference", "decoded images, max abs. difference", *(["`mix` init, max abs. difference"] if mix else []), "parameters, theirs / ours"]  # fmt: skip
    check_rows = [["fresh network (IDC mode)" if mode == "idc" else "pool member 0 (Acc-DD)", f"{c['loss_theirs']:.6g}", f"{c['loss_ours']:.6g}",
                   f"{c['loss_rel_diff']:.1e} / {c['loss_rel_diff_fp64']:.1e}", f"{c['pixel_grad_rel_diff']:.1e} / {c['pixel_grad_rel_diff_fp64']:.1e}",
                   f"{c['logits_max_abs_diff']:.1e}", f"{c['decode_max_abs_diff']:.1e}", *([f"{c['init_max_abs_diff']:.1e}" if "init_max_abs_diff" in c else "-"] if mix else []),
                   f"{c['params_theirs']} / {c['params_ours']}"] for mode, c in checks.items()]  # fmt: skip
    checks_table = md_table(check_header, check_rows, right=len(check_header) - 1).replace(
        "---:|\n", "---|\n", 1
    )  # the parameter counts left-aligned
    return "\n".join([md_table(header, table), "", sentence, "", checks_table])


def update_images(s: Settings, info: dict) -> str:
    """What the network update trained on, as recorded (DistillModule.update_images; older results: net_whole_batches or n_data)."""
    batch = info.get("net_batch", s.batch_real)
    images = info.get(
        "update_images", math.ceil(s.n_data / batch) * batch if info.get("net_whole_batches") else s.n_data
    )
    return f"{images}" + (f" (n_data {s.n_data} in whole batches of {batch})" if images != s.n_data else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--authors_dir", default=None, help="a checkout of github.com/ncsu-dk-lab/Acc-DD; without it only our side runs"
    )
    add(
        "--seeds",
        type=lambda text: [int(v) for v in text.split(",") if v.strip()],
        default=[0, 1, 2],
        help="distillation seeds (comma-separated)",
    )
    for name, text in (
        ("eval_repeats", "evaluation networks per distilled set"),
        ("outer", "outer iterations (networks drawn)"),
        ("inner", "inner iterations per network"),
        ("width", "ConvNet width, both sides and evaluation"),
        ("depth", "ConvNet depth"),
        ("ipc", None),
        ("factor", None),
        ("eval_epochs", None),
        ("batch_real", None),
        ("pool_epochs", None),
        ("n_data", "real images the network trains on after every inner iteration"),
        (
            "lr_img",
            "our DistillModule's lr_img; their command line gets the value their tune_lr_img turns into the same step size",
        ),
        ("mix_p", "CutMix probability of the network update (their code fixes 0.5 for Fashion-MNIST)"),
        ("pool_size", "Acc-DD pool members (pretrained once, handed to both sides)"),
    ):  # Settings, with DEFAULTS' types and values
        add(f"--{name}", type=type(DEFAULTS[name]), default=DEFAULTS[name], help=text)
    add("--metric", default="mse", choices=["mse", "l1"], help="gradient distance, both sides")
    add(
        "--modes",
        type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
        default=["idc", "accdd"],
        help="comma-separated: idc, accdd",
    )
    add("--jobs", type=int, default=1, help="parallel worker processes")
    add("--threads", type=int, default=None, help="torch threads per process (default: cores / jobs)")
    add(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where both sides distil and evaluate (cuda: their code runs without its CPU shims)",
    )
    add(
        "--section",
        default=None,
        help="marker of the docs section (default parity-<dataset>, parity-<dataset>-cuda on CUDA)",
    )
    add(
        "--dataset",
        default=FASHION,
        help="our side's dataset (the authors' side needs fashion_mnist); tests use digits",
    )
    add("--data_dir", default="/usr/share/datasets/fashion-mnist", help="folder with the Fashion-MNIST IDX files")
    add(
        "--out", default="parity.json", help="results JSON, written as results arrive; rerun the same command to resume"
    )
    add("--output", default="docs/benchmarks.md", help="Markdown file whose parity section is (re)written")
    add(
        "--stack_dump_s",
        type=float,
        default=0,
        help="while a run goes on, append its Python stacks to <out>.work/stacks/ every this many seconds (0: never); shows where a stalled run is",
    )
    add(
        "--report_only",
        action="store_true",
        help="write the table from what --out holds now (e.g. while a run is still going); run nothing",
    )
    return parser


def expected_tasks(opts: argparse.Namespace) -> list[dict]:  # our side only without --authors_dir
    return [
        {"mode": mode, "seed": seed, "side": side}
        for seed in opts.seeds
        for mode in opts.modes
        for side in SIDES
        if side == "ours" or opts.authors_dir
    ]


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = build_parser().parse_args(argv)
    if opts.jobs < 1 or (opts.threads is not None and opts.threads < 1):
        raise SystemExit("--jobs and --threads must be >= 1")
    if not opts.seeds or not opts.modes or set(opts.modes) - set(MODE_NAMES):
        raise SystemExit(
            f"--seeds takes comma-separated integers, --modes a comma-separated subset of {', '.join(MODE_NAMES)}"
        )
    if opts.authors_dir and opts.dataset != FASHION:
        raise SystemExit(
            f"the authors' side runs on fashion_mnist only (got --dataset {opts.dataset}); drop --authors_dir or use fashion_mnist"
        )
    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.jobs)
    os.environ.setdefault("LIGHTNING_DD_QUIET", "1")
    s = Settings(**{f.name: getattr(opts, f.name) for f in fields(Settings) if hasattr(opts, f.name)})
    out = Path(opts.out)
    work, results = out.with_name(out.name + ".work"), load_results(out, s)
    skipped = None if opts.authors_dir else "no --authors_dir was given (a checkout of github.com/ncsu-dk-lab/Acc-DD)"
    if opts.report_only:
        if not results["runs"]:
            raise SystemExit(f"{out} holds no finished runs yet; nothing to report")
        return report(results, opts, s, argv, skipped)
    session = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "wall_s": 0.0, "jobs": opts.jobs, "threads": threads,
               "cores_used": min(opts.jobs * threads, os.cpu_count() or 1), "code": code_version(), "machine": cpu_model() + gpu_suffix(s.device),
               "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}  # fmt: skip
    results["sessions"].append(session)
    began = time.perf_counter()

    def checkpoint() -> None:
        session["wall_s"] = time.perf_counter() - began
        write_json(out, results)

    torch.set_num_threads(
        os.cpu_count() or 1
    )  # the set-up (initial images, pool, first-step checks) runs before any worker
    _WORKER.update(
        authors=AuthorsCode(opts.authors_dir, s.device) if opts.authors_dir else None,
        dm=load_data(s.dataset, opts.data_dir),
    )
    dm, authors = (
        _WORKER["dm"],
        _WORKER["authors"],
    )  # for tasks run here; spawned workers (more than one job and task) load their own
    module = our_module(s, "idc", 0)  # our protocol settings in effect (its defaults), for the record
    recorded = (
        "clamp",
        "image_step",
        "net_spatial",
        "net_cutout_with_cutmix",
        "net_whole_batches",
        "mix_downsample",
        "scale_lr_with_ipc",
    )
    protocol = results["protocol"] = {"effective_lr_img": module.effective_lr_img, "net_batch": module.net_batch, "update_images": module.update_images,
                                      **{k: module.hparams[k] for k in recorded if k in module.hparams}}  # fmt: skip
    for folder in ("init", "sets", "authors_pool"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    init_file = {
        seed: work / "init" / f"seed{seed}.pt" for seed in opts.seeds
    }  # the same initial images for both sides
    for seed, path in init_file.items():  # also evaluated as the sets are: what distillation adds on each side
        if not path.exists():
            torch.save(initial_images(s, dm.train_data, seed), path)
        if str(seed) not in results.setdefault("init_runs", {}):
            results["init_runs"][str(seed)] = evaluate_stored(
                s, dm, torch.load(path, weights_only=True), f"init/seed{seed}"
            )
            checkpoint()
    pool_file, authors_files = (
        None,
        [],
    )  # one pool, handed to both sides: our cache file for ours, their checkpoint layout for theirs
    if "accdd" in opts.modes:
        config, started = (
            PoolConfig(size=s.pool_size, epochs=s.pool_epochs, cache_dir=str(work / "pool")),
            time.perf_counter(),
        )
        pool = EarlyStagePool.build_or_load(s.net, config, dm.train_data, s.pool_seed, device=s.device, progress=False)
        results.setdefault("pool_s", time.perf_counter() - started)
        pool_file = str(EarlyStagePool.cache_path(config, pool.key))
        for m, member in enumerate(pool.members):
            authors_files.append(str(work / "authors_pool" / f"member{m}.pth.tar"))
            torch.save({"state_dict": to_authors_state(member)}, authors_files[-1])
    if authors is not None:
        protocol["authors_cli_lr_img"] = (
            protocol["effective_lr_img"] / authors.parse_args(authors.cli(s, "idc", 1.0, ["unused"])).lr_img
        )
        for mode in [m for m in opts.modes if m not in results["checks"]]:
            state = (
                s.net.build_seeded(1234, dm.info.channels, dm.info.num_classes, dm.info.image_size).state_dict()
                if mode == "idc"
                else pool.members[0]
            )
            init = torch.load(init_file[opts.seeds[0]], weights_only=True)
            c = results["checks"][mode] = first_step_check(
                s, authors, dm, init, state, mode, protocol["effective_lr_img"]
            )
            print(f"first-step check ({mode}): loss theirs {c['loss_theirs']:.6g}, ours {c['loss_ours']:.6g} (rel. diff {c['loss_rel_diff']:.1e}); "
                  f"pixel gradient rel. diff {c['pixel_grad_rel_diff']:.1e}; mix init diff {c['init_max_abs_diff']:.1e}", flush=True)  # fmt: skip
    checkpoint()
    torch.set_num_threads(threads)
    tasks = expected_tasks(opts)
    todo = [t for t in tasks if task_name(t) not in results["runs"]]
    base = {"settings": asdict(s), "work": str(work), "data_dir": opts.data_dir, "authors_dir": opts.authors_dir, "pool_file": pool_file,
            "authors_pool_files": authors_files, "effective_lr_img": protocol["effective_lr_img"], "stack_dump_s": opts.stack_dump_s}  # fmt: skip
    print(
        f"parity: {len(tasks) - len(todo)} of {len(tasks)} runs already in {out}; {len(todo)} to go ({opts.jobs} process(es) x {threads} thread(s))",
        flush=True,
    )
    for result in parallel_map(
        run_task, [{**base, "task": t} for t in todo], opts.jobs, initializer=torch.set_num_threads, initargs=(threads,)
    ):  # a run's record names its task
        results["runs"][task_name(result)] = result
        checkpoint()
        print(
            f"{task_name(result)}: {_mean(result['accuracies']):.2f} % (distillation {result['distill_s']:.0f} s, evaluation {result['eval_s']:.0f} s)",
            flush=True,
        )
    checkpoint()
    return report(results, opts, s, argv, skipped)


def report(results: dict, opts: argparse.Namespace, s: Settings, argv: list[str], skipped: str | None) -> dict:
    """Print the tables and (re)write the parity section of ``--output`` (saying so when runs are missing)."""
    rows, info, sessions = summarise(results, opts.modes, opts.seeds), results.get("protocol", {}), results["sessions"]
    machine, wall = (sessions[-1] if sessions else {}), sum(x.get("wall_s", 0.0) for x in sessions)
    codes = "; ".join(dict.fromkeys(x["code"] for x in sessions if "code" in x)) or "version not recorded"
    expected = [task_name(t) for t in expected_tasks(opts)]
    missing = [name for name in expected if name not in results["runs"]]
    body = "\n\n".join([f"### {'Fashion-MNIST' if s.dataset == FASHION else s.dataset}, IPC {s.ipc}, factor {s.factor}, ConvNet-{s.depth} width {s.width}: "
        f"{s.outer} outer x {s.inner} inner iterations on both sides",
        format_tables(rows, results.get("checks", {}), s),
        *filter(None, [init_sentence(results, rows, opts.seeds)]),  # none before the initial images were evaluated
        f"Shared by both sides: the same initial images per seed (our `mix` init), ConvNet-{s.depth} width {s.width}, `{s.metric}` gradient matching of the conv "
        f"weights with `{s.augment}` (one draw per class), image SGD momentum {s.momentum_img} at step size {info.get('effective_lr_img', s.lr_img):g} (their command "
        f"line gets {info.get('authors_cli_lr_img', math.nan):.6g}, which their `tune_lr_img` scales by ipc/10 x (28/32)^2), {s.batch_real} real images per class, "
        f"the network trained on {update_images(s, info)} real images after every inner iteration (SGD lr {s.net_lr}, momentum {s.net_momentum}, wd "
        f"{s.net_weight_decay}, DSA + CutMix p {s.mix_p}). Acc-DD: one pool of {s.pool_size} ConvNets pretrained {s.pool_epochs} epoch(s) by our EarlyStagePool "
        f"(seed {s.pool_seed}), perturbation magnitudes U({s.rho_min}, {s.rho_max}); IDC mode: a fresh network every outer iteration, no perturbation.",
        f"Our DistillModule ran with its defaults: {', '.join(f'{k}={v}' for k, v in info.items() if k not in ('effective_lr_img', 'authors_cli_lr_img'))}.",
        f"Evaluation (both sides, our evaluator): stored images clamped to [0, 1], decoded by our decode, {s.eval_repeats} ConvNet-{s.depth} width {s.width} "
        f"networks per set with seeds {s.eval_seed}..{s.eval_seed + s.eval_repeats - 1} (the same networks for both sides), {s.eval_epochs} epochs of our "
        "TrainSchedule defaults, final-epoch test accuracy. Accuracy columns: mean ± std over distillation seeds of each seed's mean over its networks; the "
        "difference is paired by seed (same initial images, same evaluation networks).",
        *([f"The authors' side was skipped: {skipped}."] if skipped else []),
        "Shims applied to the authors' code (in the benchmark process only; their files are never modified or copied):\n\n" + "\n".join(f"- {shim}" for shim in SHIMS),
        f"Command: `{command('parity', argv)}`; machine: {machine.get('machine') or cpu_model()}, {machine.get('cores_used', '?')} of "
        f"{machine.get('cores', '?')} cores used ({machine.get('jobs', '?')} process(es) x {machine.get('threads', '?')} thread(s)), shared with other "
        f"work; torch {machine.get('torch', 'version not recorded')}, Python {machine.get('python', 'version not recorded')}; wall time {wall / 60:.0f} "
        f"min in all ({len(sessions)} session(s)); lightning-dd {codes}; {datetime.now(timezone.utc):%Y-%m-%d}.",
        *([f"Partial: {len(missing)} of {len(expected)} runs had not finished when this table was written ({', '.join(missing)}); the command above resumes them."] if missing else [])])  # fmt: skip
    print(body)
    write_section(
        Path(opts.output), opts.section or f"parity-{s.dataset}" + ("-cuda" if s.device == "cuda" else ""), body
    )
    return results


if __name__ == "__main__":
    main()
