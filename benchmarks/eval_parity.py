"""Evaluation parity: our evaluation protocol and the authors' training loop on the same files.

If our evaluation treated some sets differently from the authors', every accuracy we report would be off. ConvNet-3 (width 128) is trained on the same decoded sets (``initial``: a ``mix``
init; ``distilled``: ``--distilled``; ``random real``) by :func:`lightning_dd.evaluation.evaluate_set` and by their ``train.train`` on their Fashion-MNIST defaults; each network is a line of
``--out``.

    python -m benchmarks.eval_parity --authors_dir /path/to/Acc-DD --distilled lightning_logs/version_0/distilled.pt --epochs 100 300 --nets 2 --jobs 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time
import warnings
from pathlib import Path
from unittest import mock

import lightning as L
import torch

from lightning_dd import RealDataModule
from lightning_dd.classify import TrainSchedule
from lightning_dd.distill.synthetic import SyntheticSet
from lightning_dd.evaluation import evaluate_set
from lightning_dd.export import load_distilled
from lightning_dd.nets import NetSpec

from .authors import AuthorsCode, numpy_int
from .report import cell, machine_name, md_table, provenance, write_section
from .runner import ResultStore, parallel_map

SIDES = ("ours", "theirs")
SET_NAMES = ("initial", "distilled", "random real")
KEY = ("set", "side", "epochs", "seed")  # one network: a row of --out
_WORKER: dict = {}  # per process: the test split, the device and the authors' code


def _data(data_dir: str):
    os.environ.setdefault("LIGHTNING_DD_QUIET", "1")
    dm = RealDataModule("fashion_mnist", data_dir=data_dir)
    dm.setup()
    return dm.train_data, dm.test_data


def build_sets(distilled: str, ipc: int, factor: int, seed: int, data_dir: str) -> dict:
    """The three decoded sets (float pixels in [0, 1], labels) and where they came from."""
    train, _ = _data(data_dir)
    info = train.info
    initial = SyntheticSet(info.num_classes, ipc, info.channels, info.image_size, factor)
    initial.initialize("mix", train, torch.Generator().manual_seed(seed))
    exported = load_distilled(distilled)
    if exported.info.name != info.name:
        raise SystemExit(f"--distilled holds a {exported.info.name} set; this benchmark evaluates fashion_mnist")
    d_images, d_labels = exported.decoded()
    idx = train.random_subset_indices(exported.ipc, torch.Generator().manual_seed(10_000 + seed)).cpu()
    return {
        "initial": (initial.decoded_images().detach().clamp(0, 1), initial.decoded_labels()),
        "distilled": (d_images.float(), d_labels.long()),
        "random real": (train.images.cpu()[idx].float().div(255.0), train.labels.cpu()[idx].long()),
        "about": {
            "initial": f"`mix` init, IPC {ipc}, factor {factor}, seed {seed} ({ipc * factor**2} decoded images per class)",
            "distilled": f"`{distilled}` (IPC {exported.ipc}, factor {exported.factor}, {exported.config.get('outer_iterations_done', '?')} outer iterations)",
            "random real": f"{exported.ipc} random real images per class (draw seed {10_000 + seed})",
        },
    }


def _worker_init(data_dir: str, authors_dir: str | None, device: str) -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    _WORKER.update(
        test=_data(data_dir)[1], device=device, authors=AuthorsCode(authors_dir, device) if authors_dir else None
    )


def ours(images: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int) -> float:
    return evaluate_set(
        images,
        labels,
        _WORKER["test"],
        NetSpec(depth=3, width=128),
        TrainSchedule(epochs=epochs),
        seed,
        _WORKER["device"],
    )


def theirs(images: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int) -> float:
    """Their ``train.train`` as their ``test.py`` calls it on a condensed set: final-epoch top-1 (%)."""
    authors, test = _WORKER["authors"], _WORKER["test"]
    data, train = authors.data, authors.train
    args = authors.parse_args(
        ["-d", "fashion", "--ipc", "10", "-n", "convnet", "--depth", "3", "--width", "1.0", "--workers", "0", "--test"]
    )
    args.epochs, args.epoch_print_freq, args.save_ckpt, args.verbose = epochs, epochs, False, False
    train_transform, test_transform = data.transform_fashion(augment=args.augment, from_tensor=True)
    train_loader = data.MultiEpochsDataLoader(
        data.TensorDataset(images, labels, train_transform), batch_size=args.batch_size, shuffle=True, num_workers=0
    )
    val_loader = data.MultiEpochsDataLoader(
        data.TensorDataset(test.images.float().div(255.0), test.labels.long(), test_transform),
        batch_size=500,
        shuffle=False,
        num_workers=0,
    )
    L.seed_everything(seed, verbose=False)
    with contextlib.ExitStack() as stack:
        if _WORKER["device"] == "cpu":  # their model.cuda() / input.cuda() return the object itself
            for owner in (torch.Tensor, torch.nn.Module):
                stack.enter_context(mock.patch.object(owner, "cuda", lambda self, *a, **k: self))
        stack.enter_context(numpy_int())
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        model = train.define_model(args, args.nclass)
        _best, last = train.train(args, model, train_loader, val_loader, logger=lambda *a, **k: None)
    return float(last)


def run_task(task: dict) -> dict:
    images, labels = torch.load(task["sets"], weights_only=False)[task["set"]]
    started = time.perf_counter()
    accuracy = (ours if task["side"] == "ours" else theirs)(images, labels, task["epochs"], task["seed"])
    return {
        **task,
        "accuracy": accuracy,
        "seconds": time.perf_counter() - started,
        "machine": machine_name(_WORKER["device"]),
    }


def table(rows: list[dict], epochs: list[int]) -> str:
    """One row per set and epoch count: each side's accuracy, their difference and seconds per network."""
    lines = []
    for name in SET_NAMES:
        for e in epochs:
            mine = {side: [r for r in rows if (r["set"], r["epochs"], r["side"]) == (name, e, side)] for side in SIDES}
            acc = {side: [r["accuracy"] for r in mine[side]] for side in SIDES}
            if acc["ours"] or acc["theirs"]:
                diff = (
                    f"{statistics.mean(acc['ours']) - statistics.mean(acc['theirs']):+.2f}"
                    if acc["ours"] and acc["theirs"]
                    else "-"
                )
                pace = " / ".join(
                    f"{statistics.mean(r['seconds'] for r in mine[s]):.0f}" if mine[s] else "-" for s in SIDES
                )
                lines.append([name, e, cell(acc["ours"]), cell(acc["theirs"]), diff, pace])
    return md_table(
        ["set", "epochs", "ours: acc % (nets)", "theirs: acc % (nets)", "ours - theirs", "s per net (ours / theirs)"],
        lines,
    )


def report(rows: list[dict], about: dict, opts: argparse.Namespace, argv: list[str] | None) -> str:
    return "\n\n".join([
        "## Evaluation parity: our evaluation and the authors' training loop on the same files",
        "ConvNet-3 width 128 (instance norm) trained on each decoded set by our evaluation (`lightning_dd.evaluation.evaluate_set`) and by the "
        "authors' `train.train` with their `DiffAug`, data set class and normalisation on their Fashion-MNIST defaults; final-epoch test "
        "accuracy on the 10 000 test images, mean +- std over the networks (count in brackets); network seeds 0, 1, ... on both sides "
        "(the two sides draw their randomness differently, so single networks are not paired).",
        "\n".join(f"- {name}: {about[name]}" for name in SET_NAMES),
        table(rows, opts.epochs),
        f"Results: `{opts.out}` (one JSON line per network; machines: {', '.join(sorted({r['machine'] for r in rows}))}).",
        provenance("eval_parity", argv, 1, opts.device),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--authors_dir", default=None, help="checkout of github.com/ncsu-dk-lab/Acc-DD (without it only our side runs)"
    )
    parser.add_argument("--distilled", required=True, help="an exported Fashion-MNIST set (.pt)")
    parser.add_argument("--ipc", type=int, default=10, help="stored images per class of the initial set")
    parser.add_argument("--factor", type=int, default=2, help="multi-formation factor of the initial set")
    parser.add_argument("--epochs", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--nets", type=int, default=2, help="networks per set, side and epoch count")
    parser.add_argument("--sets", nargs="+", default=list(SET_NAMES), choices=SET_NAMES)
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial set and the random draw")
    parser.add_argument("--jobs", type=int, default=1, help="networks trained in parallel (one thread each)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--work", default="lightning_logs/eval_parity", help="folder for the decoded sets")
    parser.add_argument("--out", default="docs/eval-parity-runs.jsonl")
    parser.add_argument("--output", default="docs/benchmarks.md")
    parser.add_argument("--section", default="eval-parity")
    parser.add_argument("--report_only", action="store_true", help="write the table from --out without training")
    opts = parser.parse_args(argv)

    if opts.authors_dir:
        AuthorsCode.check_checkout(opts.authors_dir)  # refused before any work; workers import their code
    sets_path = Path(opts.work) / "sets.pt"
    sets_path.parent.mkdir(parents=True, exist_ok=True)
    if not sets_path.exists():
        torch.save(build_sets(opts.distilled, opts.ipc, opts.factor, opts.seed, opts.data_dir), sets_path)
    about = torch.load(sets_path, weights_only=False)["about"]
    store = ResultStore(opts.out, KEY)
    sides = SIDES if opts.authors_dir else ("ours",)
    tasks = [
        {"set": s, "side": side, "epochs": e, "seed": n, "sets": str(sets_path)}
        for e in sorted(opts.epochs)
        for n in range(opts.nets)
        for s in opts.sets
        for side in sides
    ]
    todo = store.todo(tasks)
    if todo and not opts.report_only:
        print(f"eval parity: {len(todo)} networks to train ({len(tasks) - len(todo)} done)", flush=True)
        for row in parallel_map(
            run_task, todo, opts.jobs, initializer=_worker_init, initargs=(opts.data_dir, opts.authors_dir, opts.device)
        ):
            store.add({k: v for k, v in row.items() if k != "sets"})
            print(
                f"  {row['set']:>11} {row['side']:>6} {row['epochs']:>5} ep net {row['seed']}: {row['accuracy']:.2f} % ({row['seconds']:.0f} s)",
                flush=True,
            )
    rows = [r for r in store.rows() if r["epochs"] in opts.epochs]
    print(table(rows, sorted(opts.epochs)))
    write_section(Path(opts.output), opts.section, report(rows, about, opts, argv))


if __name__ == "__main__":
    main()
