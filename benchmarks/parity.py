"""Parity with the authors' public code: their ``condense`` loop and our DistillModule, side by side.

Both sides distil Fashion-MNIST (read by our IDX reader) with ConvNet-3 of the same width, IPC 10,
factor 2, the same initial images and the same number of outer x inner iterations, in two modes:

- IDC mode: a freshly initialised network every outer iteration, no weight perturbation.
- Acc-DD mode: the SAME early-stage pool (pretrained once by our :class:`EarlyStagePool` and
  saved as state dicts in their checkpoint layout) is handed to both; members are drawn and
  perturbed by each side's own code.

Every final set is decoded and evaluated by OUR evaluator on the same evaluation networks (same
seeds), so the accuracy difference measures the distillation code alone. Before the runs, one
matching step of their ``matchloss`` and ours is computed from the same images and the same
network weights (the ``first-step loss`` check), and the two ConvNets are shown to give the same
logits for the same weights.

The authors' code (https://github.com/ncsu-dk-lab/Acc-DD) is never copied into this project: the
user fetches a checkout and passes its path with ``--authors_dir``; it is imported from there and
run unchanged except for the import-time shims listed in :data:`SHIMS` (it hard-codes CUDA and
has a few bugs that stop it from running). Without ``--authors_dir`` only our side runs.

    python benchmarks/parity.py --authors_dir /path/to/Acc-DD --seeds 0,1,2 --eval_repeats 3 \\
        --outer 5 --inner 10 --width 64 --eval_epochs 100 --jobs 2 --out parity.json

Results are appended to ``--out`` (JSON) as each run finishes, so a killed run resumes where it
stopped when started again with the same command; the table goes to a marker section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import faulthandler
import io
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import time
import types
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from authors import SHIMS, AuthorsCode, AuthorsTrainSet, MemberList  # noqa: E402
from common import accelerator, gpu_suffix, mean_std, write_section  # noqa: E402

MODE_NAMES = {"idc": "IDC mode (fresh networks)", "accdd": "Acc-DD (early-stage pool + perturbation)"}
SIDES = ("theirs", "ours")
FASHION = "fashion_mnist"
DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"
# ---------------------------------------------------------------------------- settings
@dataclass
class Settings:
    """Everything both sides must share; stored in the results file so a resume cannot mix settings."""

    dataset: str = FASHION
    ipc: int = 10
    factor: int = 2
    depth: int = 3
    width: int = 64
    outer: int = 5
    inner: int = 10
    metric: str = "mse"
    lr_img: float = 0.01
    momentum_img: float = 0.5
    batch_real: int = 64
    max_syn_per_class: int = 128
    n_data: int = 500
    net_lr: float = 0.01
    net_momentum: float = 0.9
    net_weight_decay: float = 5e-4
    mix_p: float = 0.5
    augment: str = "color_crop_cutout"
    rho_min: float = 0.01
    rho_max: float = 0.09
    pool_size: int = 2
    pool_epochs: int = 1
    pool_seed: int = 0
    eval_epochs: int = 100
    eval_repeats: int = 3
    eval_seed: int = 0
    device: str = "cpu"

    def key(self) -> dict:
        return asdict(self)


@dataclass
class Task:
    mode: str
    seed: int
    side: str

    @property
    def name(self) -> str:
        return f"{self.mode}/{self.side}/seed{self.seed}"


# ---------------------------------------------------------------------------- data and nets
def load_data(dataset: str, data_dir: str):
    """Our RealDataModule for ``dataset`` (Fashion-MNIST from the IDX files in ``data_dir``)."""
    from lightning_dd import RealDataModule

    options = {"debian_dir": data_dir} if dataset == FASHION else {}
    dm = RealDataModule(dataset, data_dir=data_dir, source_options=options)
    dm.setup()
    return dm


def net_spec(s: Settings):
    from lightning_dd.nets import NetSpec

    return NetSpec(name="convnet", depth=s.depth, width=s.width)


def initial_images(s: Settings, real, seed: int) -> torch.Tensor:
    """The stored images both sides start from: our ``mix`` init (factor**2 random real images per image)."""
    from lightning_dd.distill.synthetic import SyntheticSet

    info = real.info
    syn = SyntheticSet(info.num_classes, s.ipc, info.channels, info.image_size, s.factor)
    syn.initialize("mix", real, torch.Generator().manual_seed(10_000 + seed))
    return syn.images.detach().clone()


def authors_key_pairs(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Our ConvNet's state-dict keys -> the authors' ``models/convnet.py`` keys.

    Ours is ``features = [conv, norm, relu, pool] x depth`` (``features.{i}.*``, ``i`` the position
    in the sequence); theirs keeps the d-th conv and norm in ``layers.conv.{d}`` and
    ``layers.norm.{d}``. A conv is recognised by its 4-D weight, a norm by its 1-D weight; the
    classifier is ``classifier.*`` in both.
    """
    blocks: dict[int, list[str]] = {}
    pairs: dict[str, str] = {}
    for key in state:
        if key.startswith("features."):
            blocks.setdefault(int(key.split(".")[1]), []).append(key)
        elif key.startswith("classifier."):
            pairs[key] = key
        else:
            raise KeyError(f"unexpected ConvNet state key {key!r}")
    convs = norms = 0
    for position in sorted(blocks):
        weight = state[f"features.{position}.weight"]
        if weight.ndim == 4:
            prefix, convs = f"layers.conv.{convs}", convs + 1
        elif weight.ndim == 1:
            prefix, norms = f"layers.norm.{norms}", norms + 1
        else:
            raise KeyError(f"features.{position} is neither a conv nor a norm layer")
        for key in blocks[position]:
            pairs[key] = f"{prefix}.{key.split('.', 2)[2]}"
    if convs != norms:
        raise KeyError(f"{convs} conv layers but {norms} norm layers: not a ConvNet with one norm per block")
    return pairs


def to_authors_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our ConvNet state dict renamed to the authors' layout (tensors shared, not copied)."""
    return {theirs: state[ours] for ours, theirs in authors_key_pairs(state).items()}


# ---------------------------------------------------------------------------- our side
def _parity_module_class():
    from lightning_dd import DistillModule

    class ParityDistill(DistillModule):
        """DistillModule whose pool is the one handed to both sides (the synthetic set is pre-set before fit)."""

        shared_pool = None

        def _build_pool(self):
            if self.shared_pool is None:
                raise RuntimeError("ParityDistill needs shared_pool set in Acc-DD mode")
            return self.shared_pool

    return ParityDistill


def our_module_kwargs(s: Settings, mode: str, seed: int) -> dict:
    """What our DistillModule must share with theirs; protocol options keep our defaults."""
    return dict(
        ipc=s.ipc, factor=s.factor, init="mix", net=net_spec(s), model_source="random" if mode == "idc" else "pool",
        perturb=mode == "accdd", rho_min=s.rho_min, rho_max=s.rho_max, outer_iterations=s.outer, inner_loop=s.inner,
        batch_real=s.batch_real, max_syn_per_class=s.max_syn_per_class, metric=s.metric, match="grad", match_bias=False,
        match_head=False, augment=s.augment, lr_img=s.lr_img, momentum_img=s.momentum_img, n_data=s.n_data,
        net_lr=s.net_lr, net_momentum=s.net_momentum, net_weight_decay=s.net_weight_decay, net_cutmix_p=s.mix_p, seed=seed,
    )  # fmt: skip


def our_protocol(s: Settings) -> dict:
    """Our DistillModule's protocol settings in effect (its defaults), for the record."""
    module = _parity_module_class()(**our_module_kwargs(s, "idc", 0))
    hp = module.hparams
    return {
        "effective_lr_img": module.effective_lr_img,
        "net_batch": module.net_batch,
        "update_images": module.update_images,
        **{k: hp[k] for k in ("clamp", "image_step", "net_spatial", "net_cutout_with_cutmix", "net_whole_batches", "mix_downsample", "scale_lr_with_ipc") if k in hp},
    }


def run_ours(s: Settings, mode: str, seed: int, dm, init: torch.Tensor, pool) -> tuple[torch.Tensor, list[float]]:
    """Our DistillModule from ``init`` (and ``pool`` in Acc-DD mode); returns the stored images and per-outer losses."""
    import logging

    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from lightning_dd.distill.synthetic import SyntheticSet

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available" banners per run
    losses: list[float] = []
    classes = dm.info.num_classes

    class OuterLoss(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if pl_module.finished_outer:
                losses.append(float(trainer.callback_metrics["distill/outer_loss"]) / classes)

    module = _parity_module_class()(**our_module_kwargs(s, mode, seed))
    module.shared_pool = pool
    info = dm.info
    synthetic = SyntheticSet(info.num_classes, s.ipc, info.channels, info.image_size, s.factor)
    with torch.no_grad():
        synthetic.images.copy_(init)
    module.synthetic = synthetic  # attach_data keeps a set that is already there
    trainer = L.Trainer(
        accelerator=accelerator(s.device), devices=1, max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[OuterLoss()],
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=dm)
    if module.outer != s.outer:
        raise RuntimeError(f"our run stopped after {module.outer} of {s.outer} outer iterations")
    return module.synthetic.images.detach().cpu().clone(), losses


# ---------------------------------------------------------------------------- evaluation
def evaluate_stored(s: Settings, dm, stored: torch.Tensor, name: str) -> list[float]:
    """Both sides' stored images get the same treatment: clamp to [0, 1], our decode, our evaluator."""
    from lightning_dd.classify import TrainSchedule
    from lightning_dd.distill.synthetic import decode, decode_labels
    from lightning_dd.evaluation import evaluate_repeats

    classes = dm.info.num_classes
    images = decode(stored.clamp(0, 1), s.factor)
    labels = decode_labels(torch.arange(classes).repeat_interleave(s.ipc), s.factor)
    result = evaluate_repeats(name, images, labels, dm.test_data, net_spec(s), TrainSchedule(epochs=s.eval_epochs), s.eval_repeats, s.eval_seed, s.device, progress=False)
    return result.accuracies


# ---------------------------------------------------------------------------- the direct check
def first_step_check(s: Settings, authors: AuthorsCode, dm, init: torch.Tensor, state: dict[str, torch.Tensor], mode: str, effective_lr_img: float) -> dict:
    """One matching step of their ``matchloss`` and ours from the same images and weights.

    Also checks that their ConvNet with our weights gives our logits, and that their multi-formation
    decode gives our decoded images (up to the order of the tiles).
    """
    from lightning_dd.distill.functional_net import FunctionalNet
    from lightning_dd.distill.matching import class_matching_loss, matched_parameter_names
    from lightning_dd.distill.synthetic import decode
    from lightning_dd.nets.spec import head_parameter_names

    info = dm.info
    args = authors.args_for(s, mode, effective_lr_img, ["unused"])
    template = net_spec(s).build(info.channels, info.num_classes, info.image_size)
    template.load_state_dict(state)
    theirs = authors.condense.define_model(args, info.num_classes)
    theirs.load_state_dict(to_authors_state(state), strict=True)
    n_ours = sum(p.numel() for p in template.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(16, info.channels, *info.image_size, generator=generator)
    with torch.no_grad():
        logits_diff = float((template(probe) - theirs(probe)).abs().max())
    # Decode: theirs orders tiles tile-major (all images' tile 0, then tile 1 ...), ours image-major.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synset = authors.original_synthesizer(args, info.num_classes, info.channels, *info.image_size, device="cpu")
    f2 = s.factor**2
    init_diff = _init_difference(synset, dm.train_data, s)
    synset.data.data.copy_(init)
    decode_diff = 0.0
    for c in range(info.num_classes):
        their_dec, _ = synset.sample(c, max_size=args.batch_syn_max)
        our_dec = decode(init[c * s.ipc : (c + 1) * s.ipc], s.factor)
        order = torch.arange(s.ipc * f2).view(s.ipc, f2).t().flatten()
        decode_diff = max(decode_diff, float((their_dec.detach() - our_dec[order]).abs().max()))
    # Matching loss and its pixel gradient, class by class, in fp32 and (to separate rounding from
    # any real difference) in fp64.
    real = dm.train_data.class_balanced_batch(s.batch_real, generator)
    normalizer = dm.train_data.normalizer
    result = {
        "mode": mode,
        "params_ours": n_ours,
        "params_theirs": n_theirs,
        "logits_max_abs_diff": logits_diff,
        "decode_max_abs_diff": decode_diff,
        "init_max_abs_diff": init_diff,
    }
    for dtype, suffix in ((torch.float32, ""), (torch.float64, "_fp64")):
        ours_net = copy.deepcopy(template).to(dtype)
        their_net = copy.deepcopy(theirs).to(dtype)
        net = FunctionalNet(ours_net)
        weights = net.clone_weights(ours_net.state_dict())
        shapes = {n: p.shape for n, p in ours_net.named_parameters()}
        matched = [weights[n] for n in matched_parameter_names(shapes, head_parameter_names(ours_net))]
        loss_theirs = loss_ours = grad_diff = grad_scale = 0.0
        for c in range(info.num_classes):
            pixels = init[c * s.ipc : (c + 1) * s.ipc].to(dtype).clone().requires_grad_(True)
            syn = normalizer(decode(pixels, s.factor)).to(dtype)
            real_c = real[c].to(dtype)
            labels_real = torch.full((real_c.shape[0],), c, dtype=torch.long)
            labels_syn = torch.full((syn.shape[0],), c, dtype=torch.long)
            lt = authors.condense.matchloss(args, real_c, syn, labels_real, labels_syn, their_net)
            (gt,) = torch.autograd.grad(lt, pixels, retain_graph=True)  # syn's decode graph is reused below
            lo = class_matching_loss(lambda x: net(weights, x), matched, real_c, syn, c, s.metric)
            (go,) = torch.autograd.grad(lo, pixels)
            loss_theirs += float(lt.detach())
            loss_ours += float(lo.detach())
            grad_diff = max(grad_diff, float((gt - go).abs().max()))
            grad_scale = max(grad_scale, float(gt.abs().max()))
        result.update({
            f"loss_theirs{suffix}": loss_theirs,
            f"loss_ours{suffix}": loss_ours,
            f"loss_rel_diff{suffix}": abs(loss_theirs - loss_ours) / max(abs(loss_theirs), 1e-30),
            f"pixel_grad_rel_diff{suffix}": grad_diff / max(grad_scale, 1e-30),
        })  # fmt: skip
    return result


def _init_difference(synset, train, s: Settings) -> float:
    """Their ``Synthesizer.init(loader, 'mix')`` and our ``assemble_mix`` on the same real images.

    Their init gives tile ``k`` of stored image ``m`` the class sample's image ``k * ipc + m``; ours
    the image ``m * factor**2 + k``: the same images are handed to ours in that order.
    """
    from lightning_dd.distill.synthetic import assemble_mix

    f2, generator = s.factor**2, torch.Generator().manual_seed(1)
    samples = {c: train.images[train.class_sample_indices(c, s.ipc * f2, generator)].float().div(255.0) for c in range(train.info.num_classes)}
    loader = types.SimpleNamespace(class_sample=lambda c, n: (samples[c][:n], torch.full((n,), c)))
    with contextlib.redirect_stdout(io.StringIO()):
        synset.init(loader, init_type="mix")
    order = torch.arange(s.ipc * f2).view(f2, s.ipc).t().flatten()  # ours[m * f2 + k] = theirs[k * ipc + m]
    ours = torch.cat([assemble_mix(samples[c][order], s.factor, "nearest") for c in samples])
    return float((synset.data.detach().cpu() - ours).abs().max())


# ---------------------------------------------------------------------------- runs
_WORKER: dict = {}


def _worker_init(threads: int, dataset: str, data_dir: str, authors_dir: str | None, device: str = "cpu") -> None:
    """Per-process set-up: thread count, our data, the authors' modules (imported once per process)."""
    os.environ.setdefault("LIGHTNING_DD_QUIET", "1")
    torch.set_num_threads(threads)
    _WORKER["dm"] = load_data(dataset, data_dir)
    _WORKER["authors"] = AuthorsCode(authors_dir, device) if authors_dir else None


def run_task(payload: dict) -> dict:
    """One distillation (one side, one mode, one seed) and the evaluation of its set.

    With ``stack_dump_s`` > 0, the Python stacks of the process are appended to
    ``<work>/stacks/<task>.txt`` every that many seconds while the task runs, so a run that
    stalls (e.g. killed by a time limit) shows where it was.
    """
    every = payload.get("stack_dump_s") or 0
    if every <= 0:
        return _run_task(payload)
    name = Task(**payload["task"]).name.replace("/", "-")
    stacks = Path(payload["work"]) / "stacks"
    stacks.mkdir(parents=True, exist_ok=True)
    with open(stacks / f"{name}.txt", "a") as handle:
        faulthandler.dump_traceback_later(every, repeat=True, file=handle)
        try:
            return _run_task(payload)
        finally:
            faulthandler.cancel_dump_traceback_later()


def _run_task(payload: dict) -> dict:
    if not _WORKER:
        _worker_init(payload["threads"], payload["settings"]["dataset"], payload["data_dir"], payload["authors_dir"], payload["settings"]["device"])
    s, task, work = Settings(**payload["settings"]), Task(**payload["task"]), Path(payload["work"])
    dm = _WORKER["dm"]
    init = torch.load(work / "init" / f"seed{task.seed}.pt", weights_only=True)
    random.seed(task.seed)
    np.random.seed(task.seed)
    torch.manual_seed(task.seed)
    record: dict = {"mode": task.mode, "side": task.side, "seed": task.seed}
    started = time.perf_counter()
    if task.side == "ours":
        from lightning_dd.distill.pool import EarlyStagePool

        pool = EarlyStagePool.load(payload["pool_file"]) if task.mode == "accdd" else None
        stored, losses = run_ours(s, task.mode, task.seed, dm, init, pool)
    else:
        authors: AuthorsCode = _WORKER["authors"]
        files = payload["authors_pool_files"] if task.mode == "accdd" else ["<fresh network>"]
        args = authors.args_for(s, task.mode, payload["effective_lr_img"], files)
        args.model_path = MemberList(files)
        args.save_dir = str(work / "authors_out" / task.name.replace("/", "-"))
        os.makedirs(args.save_dir, exist_ok=True)
        train = dm.train_data
        train_set = AuthorsTrainSet(train.images, train.labels, dm.info.num_classes)
        stored, lines = authors.condense_run(args, train_set, init, task.mode == "idc", Path(args.save_dir) / "stdout.txt")
        losses = [float(m.group(1)) for m in (re.search(r"loss: ([0-9.eE+-]+)", line) for line in lines) if m]
        record["lr_img"] = args.lr_img
    record["distill_s"] = time.perf_counter() - started
    record["outer_losses"] = losses
    (work / "sets").mkdir(parents=True, exist_ok=True)
    torch.save(stored, work / "sets" / f"{task.name.replace('/', '-')}.pt")
    started = time.perf_counter()
    record["accuracies"] = evaluate_stored(s, dm, stored, task.name)
    record["eval_s"] = time.perf_counter() - started
    record["threads"] = torch.get_num_threads()
    return record


def save_results(path: Path, results: dict) -> None:
    from lightning_dd.atomic import atomic_open

    with atomic_open(path, "w") as handle:
        json.dump(results, handle, indent=1)


def load_results(path: Path, settings: Settings) -> dict:
    """The results file of an earlier (possibly killed) run with the same settings, or a fresh record."""
    if path.exists():
        results = json.loads(path.read_text())
        if results.get("settings") != settings.key():
            changed = sorted(k for k in settings.key() if results.get("settings", {}).get(k) != settings.key()[k])
            raise SystemExit(f"{path} holds results for other settings ({', '.join(changed)} differ); pass another --out or the same settings")
        return results
    return {"settings": settings.key(), "runs": {}, "checks": {}, "sessions": []}


# ---------------------------------------------------------------------------- summary
def summarise(results: dict, modes: list[str], seeds: list[int]) -> list[dict]:
    """Per mode: each side's accuracy (mean +- std over seeds of the per-seed mean) and the paired difference."""
    rows = []
    for mode in modes:
        row: dict = {"mode": mode, "seeds": []}
        per_side: dict[str, dict[int, float]] = {side: {} for side in SIDES}
        for side in SIDES:
            for seed in seeds:
                run = results["runs"].get(f"{mode}/{side}/seed{seed}")
                if run is not None:
                    per_side[side][seed] = sum(run["accuracies"]) / len(run["accuracies"])
        for side in SIDES:
            values = list(per_side[side].values())
            row[side] = mean_std(values) if values else None
            row[f"{side}_n"] = len(values)
            times = [results["runs"][f"{mode}/{side}/seed{s}"]["distill_s"] for s in per_side[side]]
            row[f"{side}_distill_s"] = sum(times) / len(times) if times else None
            losses = [results["runs"][f"{mode}/{side}/seed{s}"]["outer_losses"][-1] for s in per_side[side] if results["runs"][f"{mode}/{side}/seed{s}"]["outer_losses"]]
            row[f"{side}_last_loss"] = sum(losses) / len(losses) if losses else None
        row["per_seed"] = per_side
        paired = [per_side["ours"][s] - per_side["theirs"][s] for s in seeds if s in per_side["ours"] and s in per_side["theirs"]]
        row["paired"] = [round(d, 2) for d in paired]
        row["diff"] = mean_std(paired) if paired else None
        rows.append(row)
    return rows


def init_sentence(results: dict, rows: list[dict], seeds: list[int]) -> str | None:
    """The initial images' accuracy and each side's gain over it (per seed, then averaged); None before it was measured.

    ``rows`` are :func:`summarise`'s, whose per-seed means the gains are taken from.
    """
    init = {seed: sum(acc) / len(acc) for seed in seeds if (acc := results.get("init_runs", {}).get(str(seed)))}
    if not init:
        return None
    m, sd = mean_std(list(init.values()))
    gains = []
    for row in rows:
        per_side = []
        for side in SIDES:
            diffs = [mean - init[seed] for seed, mean in row["per_seed"][side].items() if seed in init]
            per_side.append(f"{sum(diffs) / len(diffs):+.2f}" if diffs else "-")
        gains.append(f"{MODE_NAMES[row['mode']].split(' (')[0]} {' / '.join(per_side)}")
    per_seed = ", ".join(f"{v:.2f}" for v in init.values())
    return (
        f"The initial images themselves, evaluated the same way (no distillation): {m:.2f} ± {sd:.2f} % (per seed {per_seed}). "
        f"Gain of the distilled sets over them, mean over seeds, theirs / ours: {'; '.join(gains)} points."
    )


def _fmt(pair, signed: bool = False) -> str:
    if pair is None:
        return "-"
    sign = "+" if signed else ""
    return f"{pair[0]:{sign}.2f} ± {pair[1]:.2f}"


def _fmt_diff(value: float | None) -> str:
    """A recorded difference; ``-`` where the results predate that check."""
    return "-" if value is None else f"{value:.1e}"


def format_tables(rows: list[dict], checks: dict, s: Settings) -> str:
    lines = [
        "| mode | authors' code (%) | lightning-dd (%) | ours − theirs, paired by seed | per seed | seeds x eval nets | distillation s/run, theirs / ours | last outer loss per class, theirs (logged to 0.1) / ours |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        per_seed = ", ".join(f"{d:+.2f}" for d in row["paired"]) or "-"
        times = " / ".join("-" if row[f"{side}_distill_s"] is None else f"{row[f'{side}_distill_s']:.0f}" for side in SIDES)
        loss = " / ".join("-" if row[f"{side}_last_loss"] is None else f"{row[f'{side}_last_loss']:.4g}" for side in SIDES)
        nets = f"{row['theirs_n']} / {row['ours_n']} x {s.eval_repeats}"
        lines.append(f"| {MODE_NAMES[row['mode']]} | {_fmt(row['theirs'])} | {_fmt(row['ours'])} | {_fmt(row['diff'], True)} | {per_seed} | {nets} | {times} | {loss} |")
    if checks:
        lines += [
            "",
            "First-step loss: one matching step (all classes, no augmentation) of their `matchloss` and ours on the same "
            "real batch, the same synthetic images and the same network weights; their ConvNet loaded with our weights. "
            "`mix` init: their `Synthesizer.init` and ours (`mix_downsample: nearest`) on the same real images.",
            "",
            "| network | loss, theirs | loss, ours | relative difference (fp32 / fp64) | pixel gradient, max rel. difference (fp32 / fp64) | logits, max abs. difference | decoded images, max abs. difference | `mix` init, max abs. difference | parameters, theirs / ours |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for mode, c in checks.items():
            network = "fresh network (IDC mode)" if mode == "idc" else "pool member 0 (Acc-DD)"
            lines.append(
                f"| {network} | {c['loss_theirs']:.6g} | {c['loss_ours']:.6g} | {c['loss_rel_diff']:.1e} / {c['loss_rel_diff_fp64']:.1e} "
                f"| {c['pixel_grad_rel_diff']:.1e} / {c['pixel_grad_rel_diff_fp64']:.1e} "
                f"| {c['logits_max_abs_diff']:.1e} | {c['decode_max_abs_diff']:.1e} | {_fmt_diff(c.get('init_max_abs_diff'))} | {c['params_theirs']} / {c['params_ours']} |"
            )
    return "\n".join(lines)


def code_version() -> str:
    """The lightning-dd commit the runs used, naming uncommitted library files (our side measures them)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "lightning_dd"], cwd=root, capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return f"commit {commit}" + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def update_images(s: Settings, info: dict) -> str:
    """What the network update trained on, as recorded (results written before whole batches took ``n_data`` exactly)."""
    batch = info.get("net_batch", s.batch_real)
    if "update_images" in info:  # recorded from the module (DistillModule.update_images)
        whole = " in whole batches of " + str(batch) if info["update_images"] != s.n_data else ""
        return f"{info['update_images']}" + (f" (n_data {s.n_data}{whole})" if whole else "")
    if info.get("net_whole_batches"):  # results recorded before the module reported it
        return f"{math.ceil(s.n_data / batch) * batch} (n_data {s.n_data} in whole batches of {batch})"
    return str(s.n_data)


def docs_body(results: dict, rows: list[dict], s: Settings, argv: list[str], skipped: str | None, seeds: list[int]) -> str:
    info = results.get("protocol", {})
    wall = sum(x.get("wall_s", 0.0) for x in results["sessions"])
    machine = results["sessions"][-1] if results["sessions"] else {}
    codes = list(dict.fromkeys(x["code"] for x in results["sessions"] if "code" in x))
    title = (
        f"### {'Fashion-MNIST' if s.dataset == FASHION else s.dataset}, IPC {s.ipc}, factor {s.factor}, ConvNet-{s.depth} width {s.width}: "
        f"{s.outer} outer x {s.inner} inner iterations on both sides"
    )
    shared = (
        f"Shared by both sides: the same initial images per seed (our `mix` init), ConvNet-{s.depth} width {s.width}, "
        f"`{s.metric}` gradient matching of the conv weights with `{s.augment}` (one draw per class), image SGD "
        f"momentum {s.momentum_img} at step size {info.get('effective_lr_img', s.lr_img):g} (their command line gets "
        f"{info.get('authors_cli_lr_img', float('nan')):.6g}, which their `tune_lr_img` scales by ipc/10 x (28/32)^2), "
        f"{s.batch_real} real images per class, the network trained on {update_images(s, info)} real images after every inner "
        f"iteration (SGD lr {s.net_lr}, momentum {s.net_momentum}, wd {s.net_weight_decay}, DSA + CutMix p {s.mix_p}). "
        f"Acc-DD: one pool of {s.pool_size} ConvNets pretrained {s.pool_epochs} epoch(s) by our EarlyStagePool "
        f"(seed {s.pool_seed}), perturbation magnitudes U({s.rho_min}, {s.rho_max}); IDC mode: a fresh network "
        f"every outer iteration, no perturbation."
    )
    ours = ", ".join(f"{k}={v}" for k, v in info.items() if k not in ("effective_lr_img", "authors_cli_lr_img"))
    evaluation = (
        f"Evaluation (both sides, our evaluator): stored images clamped to [0, 1], decoded by our decode, "
        f"{s.eval_repeats} ConvNet-{s.depth} width {s.width} networks per set with seeds {s.eval_seed}..{s.eval_seed + s.eval_repeats - 1} "
        f"(the same networks for both sides), {s.eval_epochs} epochs of our TrainSchedule defaults, final-epoch test accuracy. "
        f"Accuracy columns: mean ± std over distillation seeds of each seed's mean over its networks; the difference "
        f"is paired by seed (same initial images, same evaluation networks)."
    )
    start = init_sentence(results, rows, seeds)
    parts = [title, "", format_tables(rows, results.get("checks", {}), s), *(["", start] if start else []), "", shared, "", f"Our DistillModule ran with its defaults: {ours}.", "", evaluation]
    if skipped:
        parts += ["", f"The authors' side was skipped: {skipped}."]
    parts += ["", "Shims applied to the authors' code (in the benchmark process only; their files are never modified or copied):", ""]
    parts += [f"- {shim}" for shim in SHIMS]
    command = "python benchmarks/parity.py " + " ".join(argv)
    parts += [
        "",
        f"Command: `{command}`; machine: {machine.get('machine') or cpu_model()}, {machine.get('cores_used', '?')} of {machine.get('cores', '?')} cores used "
        f"({machine.get('jobs', '?')} process(es) x {machine.get('threads', '?')} thread(s)), shared with other work; "
        f"torch {machine.get('torch', 'version not recorded')}, Python {machine.get('python', 'version not recorded')}; wall time {wall / 60:.0f} min in all "
        f"({len(results['sessions'])} session(s)); lightning-dd {'; '.join(codes) or 'version not recorded'}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d}.",
    ]
    return "\n".join(parts)


# ---------------------------------------------------------------------------- main
def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODE_NAMES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"--modes takes a comma-separated subset of {', '.join(MODE_NAMES)}, got {text!r}")
    return modes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors_dir", default=None, help="a checkout of github.com/ncsu-dk-lab/Acc-DD; without it only our side runs")
    parser.add_argument("--seeds", type=_int_list, default=[0, 1, 2], help="distillation seeds (comma-separated)")
    parser.add_argument("--eval_repeats", type=int, default=3, help="evaluation networks per distilled set")
    parser.add_argument("--outer", type=int, default=5, help="outer iterations (networks drawn)")
    parser.add_argument("--inner", type=int, default=10, help="inner iterations per network")
    parser.add_argument("--width", type=int, default=64, help="ConvNet width, both sides and evaluation")
    parser.add_argument("--depth", type=int, default=3, help="ConvNet depth")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--eval_epochs", type=int, default=100)
    parser.add_argument("--metric", default="mse", choices=["mse", "l1"], help="gradient distance, both sides")
    parser.add_argument("--lr_img", type=float, default=0.01, help="our DistillModule's lr_img; their command line gets the value their tune_lr_img turns into the same step size")
    parser.add_argument("--n_data", type=int, default=500, help="real images the network trains on after every inner iteration")
    parser.add_argument("--batch_real", type=int, default=64)
    parser.add_argument("--mix_p", type=float, default=0.5, help="CutMix probability of the network update (their code fixes 0.5 for Fashion-MNIST)")
    parser.add_argument("--pool_size", type=int, default=2, help="Acc-DD pool members (pretrained once, handed to both sides)")
    parser.add_argument("--pool_epochs", type=int, default=1)
    parser.add_argument("--modes", type=_modes, default=["idc", "accdd"], help="comma-separated: idc, accdd")
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default: cores / jobs)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both sides distil and evaluate (cuda: their code runs without its CPU shims)")
    parser.add_argument("--section", default=None, help="marker of the docs section (default parity-<dataset>, parity-<dataset>-cuda on CUDA)")
    parser.add_argument("--dataset", default=FASHION, help="our side's dataset (the authors' side needs fashion_mnist); tests use digits")
    parser.add_argument("--data_dir", default=DEBIAN_FASHION, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--out", default="parity.json", help="results JSON, written as results arrive; rerun the same command to resume")
    parser.add_argument("--output", default="docs/benchmarks.md", help="Markdown file whose parity section is (re)written")
    parser.add_argument("--stack_dump_s", type=float, default=0, help="while a run goes on, append its Python stacks to <out>.work/stacks/ every this many seconds (0: never); shows where a stalled run is")
    parser.add_argument("--report_only", action="store_true", help="write the table from what --out holds now (e.g. while a run is still going); run nothing")
    return parser


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = build_parser().parse_args(argv)
    if opts.jobs < 1 or (opts.threads is not None and opts.threads < 1):
        raise SystemExit("--jobs and --threads must be >= 1")
    if opts.authors_dir and opts.dataset != FASHION:
        raise SystemExit(f"the authors' side runs on fashion_mnist only (got --dataset {opts.dataset}); drop --authors_dir or use fashion_mnist")
    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.jobs)
    os.environ.setdefault("LIGHTNING_DD_QUIET", "1")
    s = Settings(
        dataset=opts.dataset, ipc=opts.ipc, factor=opts.factor, depth=opts.depth, width=opts.width, outer=opts.outer,
        inner=opts.inner, metric=opts.metric, lr_img=opts.lr_img, batch_real=opts.batch_real, n_data=opts.n_data,
        mix_p=opts.mix_p, pool_size=opts.pool_size, pool_epochs=opts.pool_epochs, eval_epochs=opts.eval_epochs,
        eval_repeats=opts.eval_repeats, device=opts.device,
    )  # fmt: skip
    out = Path(opts.out)
    work = out.with_name(out.name + ".work")
    results = load_results(out, s)
    skipped = None if opts.authors_dir else "no --authors_dir was given (a checkout of github.com/ncsu-dk-lab/Acc-DD)"
    if opts.report_only:
        if not results["runs"]:
            raise SystemExit(f"{out} holds no finished runs yet; nothing to report")
        return report(results, opts, s, argv, skipped)
    session = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "wall_s": 0.0, "jobs": opts.jobs, "threads": threads,
        "cores_used": min(opts.jobs * threads, os.cpu_count() or 1), "code": code_version(), "machine": cpu_model() + gpu_suffix(s.device),
        "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
    }  # fmt: skip
    results["sessions"].append(session)
    began = time.perf_counter()

    def checkpoint() -> None:
        session["wall_s"] = time.perf_counter() - began
        save_results(out, results)

    # Set-up (pool pretraining, first-step checks) runs before any worker: it gets every core.
    torch.set_num_threads(os.cpu_count() or 1)
    authors = AuthorsCode(opts.authors_dir, s.device) if opts.authors_dir else None  # workers import their own copy
    dm = load_data(s.dataset, opts.data_dir)
    protocol = our_protocol(s)
    results["protocol"] = protocol

    # The same initial images for both sides, per seed.
    (work / "init").mkdir(parents=True, exist_ok=True)
    for seed in opts.seeds:
        path = work / "init" / f"seed{seed}.pt"
        if not path.exists():
            torch.save(initial_images(s, dm.train_data, seed), path)

    # One pool, handed to both sides: our cache file for ours, their checkpoint layout for theirs.
    pool_file, authors_files = None, []
    if "accdd" in opts.modes:
        from lightning_dd.distill.pool import EarlyStagePool, PoolConfig, pool_key, pool_key_fields

        config = PoolConfig(size=s.pool_size, epochs=s.pool_epochs, cache_dir=str(work / "pool"))
        started = time.perf_counter()
        pool = EarlyStagePool.build_or_load(net_spec(s), config, dm.train_data, s.pool_seed, device=s.device, progress=False)
        results.setdefault("pool_s", time.perf_counter() - started)
        pool_file = str(EarlyStagePool.cache_path(config, pool_key(pool_key_fields(net_spec(s), config, dm.train_data, s.pool_seed))))
        for m, member in enumerate(pool.members):
            path = work / "authors_pool" / f"member{m}.pth.tar"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": to_authors_state(member)}, path)
            authors_files.append(str(path))

    if authors is not None:
        results["protocol"]["authors_cli_lr_img"] = protocol["effective_lr_img"] / authors.parse_args(authors.cli(s, "idc", 1.0, ["unused"])).lr_img
        for mode in opts.modes:
            if mode not in results["checks"]:
                info = dm.info
                state = net_spec(s).build_seeded(1234, info.channels, info.num_classes, info.image_size).state_dict() if mode == "idc" else pool.members[0]
                init = torch.load(work / "init" / f"seed{opts.seeds[0]}.pt", weights_only=True)
                results["checks"][mode] = first_step_check(s, authors, dm, init, state, mode, protocol["effective_lr_img"])
                c = results["checks"][mode]
                print(f"first-step check ({mode}): loss theirs {c['loss_theirs']:.6g} ours {c['loss_ours']:.6g} (rel. diff {c['loss_rel_diff']:.1e}, fp64 {c['loss_rel_diff_fp64']:.1e}; pixel gradient {c['pixel_grad_rel_diff']:.1e}, fp64 {c['pixel_grad_rel_diff_fp64']:.1e}); logits diff {c['logits_max_abs_diff']:.1e}; decode diff {c['decode_max_abs_diff']:.1e}; mix init diff {_fmt_diff(c.get('init_max_abs_diff'))}", flush=True)
    checkpoint()

    # The initial images themselves, evaluated as the sets are: what distillation adds on each side.
    for seed in opts.seeds:
        if str(seed) not in results.setdefault("init_runs", {}):
            init = torch.load(work / "init" / f"seed{seed}.pt", weights_only=True)
            results["init_runs"][str(seed)] = evaluate_stored(s, dm, init, f"init/seed{seed}")
            checkpoint()

    torch.set_num_threads(threads)
    sides = [side for side in SIDES if side == "ours" or opts.authors_dir]
    tasks = [Task(mode, seed, side) for seed in opts.seeds for mode in opts.modes for side in sides]
    todo = [t for t in tasks if t.name not in results["runs"]]
    base = {
        "settings": s.key(), "work": str(work), "threads": threads, "data_dir": opts.data_dir, "authors_dir": opts.authors_dir,
        "pool_file": pool_file, "authors_pool_files": authors_files, "effective_lr_img": protocol["effective_lr_img"],
        "stack_dump_s": opts.stack_dump_s,
    }  # fmt: skip
    print(f"parity: {len(tasks) - len(todo)} of {len(tasks)} runs already in {out}; {len(todo)} to go ({opts.jobs} process(es) x {threads} thread(s))", flush=True)

    def record(task: Task, result: dict) -> None:
        results["runs"][task.name] = result
        checkpoint()
        acc = sum(result["accuracies"]) / len(result["accuracies"])
        print(f"{task.name}: {acc:.2f} % (distillation {result['distill_s']:.0f} s, evaluation {result['eval_s']:.0f} s)", flush=True)

    if opts.jobs == 1:
        _WORKER.update({"dm": dm, "authors": authors})
        for task in todo:
            record(task, run_task({**base, "task": asdict(task)}))
    elif todo:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(opts.jobs, mp_context=context, initializer=_worker_init, initargs=(threads, s.dataset, opts.data_dir, opts.authors_dir, s.device)) as executor:
            futures = {executor.submit(run_task, {**base, "task": asdict(t)}): t for t in todo}
            for future in as_completed(futures):
                record(futures[future], future.result())
    checkpoint()
    return report(results, opts, s, argv, skipped)


def report(results: dict, opts: argparse.Namespace, s: Settings, argv: list[str], skipped: str | None) -> dict:
    """Print the tables and (re)write the parity section of ``--output`` (saying so when runs are missing)."""
    rows = summarise(results, opts.modes, opts.seeds)
    body = docs_body(results, rows, s, [a for a in argv if a != "--report_only"], skipped, opts.seeds)
    sides = [side for side in SIDES if side == "ours" or opts.authors_dir]
    expected = [f"{m}/{side}/seed{seed}" for seed in opts.seeds for m in opts.modes for side in sides]
    missing = [name for name in expected if name not in results["runs"]]
    if missing:
        body += f"\n\nPartial: {len(missing)} of {len(expected)} runs had not finished when this table was written ({', '.join(missing)}); the command above resumes them."
    print(body)
    write_section(Path(opts.output), opts.section or f"parity-{s.dataset}" + ("-cuda" if s.device == "cuda" else ""), body)
    return results


if __name__ == "__main__":
    main()
