"""DD-Ranking's scores for distilled sets, hard and soft labels, on several networks: one table from ``lightning-dd evaluate`` reports.

Each set is evaluated by :func:`lightning_dd.commands.evaluate` with baselines, the full training set, the runs without augmentation
(ARS) and soft labels from a cached teacher; its JSON report is kept beside the results (a rerun reuses a finished report), and the
table gives, per set and network, hard- and soft-label accuracy with random real beside it and IOR, HLR, LRS, ARS (fractions; on
validation accuracy where the set's data held a split out, else test).

    python -m benchmarks.ranking --set 'IPC 1=runs/ipc1/distilled.pt' --networks '[{depth: 3}, {name: resnet_ap, depth: 10, width: 16}]'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from lightning_dd.commands import evaluate
from lightning_dd.nets import NetSpec
from lightning_dd.teacher import TeacherConfig

from .report import cell, md_table, provenance, write_section


def run_set(name: str, path: str, args: argparse.Namespace) -> dict:
    """The evaluate report of one set (read back when it is already in ``--reports``)."""
    report = Path(args.reports) / f"{name.replace(' ', '_').replace('/', '_')}.json"
    if not report.exists():
        report.parent.mkdir(parents=True, exist_ok=True)
        networks = [NetSpec(**n) for n in yaml.safe_load(args.networks)]
        evaluate(path, networks=networks, epochs=args.epochs, repeats=args.repeats, baselines=True, full_set_epochs=args.full_set_epochs, scores=True,
                 soft_labels=args.soft_labels, teacher=_teacher(args), results=str(report), data_dir=args.data_dir, device=args.device, progress=False)  # fmt: skip
    return json.loads(report.read_text())


def _teacher(args: argparse.Namespace) -> TeacherConfig:
    return TeacherConfig(epochs=args.teacher_epochs, cache_dir=args.teacher_cache)


def table(reports: dict[str, dict]) -> str:
    """Per set and network: accuracies (hard, soft; set and random real) and the scores."""
    rows = []
    for name, report in reports.items():
        for network in report["networks"]:
            by_role = {row.get("role"): row for row in network["rows"]}
            scores = network["scores"]["values"]

            def acc(role: str) -> str:
                row = by_role.get(role)
                return cell(row["accuracies"], count=False) if row else "-"

            def score(key: str) -> str:
                value = scores.get(key)
                return (
                    f"{value:+.3f}"
                    if isinstance(value, (int, float)) and key in ("ior", "hlr", "soft_ior")
                    else (f"{value:.3f}" if isinstance(value, (int, float)) else "-")
                )

            rows.append(
                [
                    name,
                    network["label"],
                    acc("set"),
                    acc("random"),
                    acc("set_soft"),
                    acc("random_soft"),
                    acc("full"),
                    *(score(k) for k in ("ior", "hlr", "lrs", "ars", "soft_ior", "soft_lrs")),
                    f"{network['seconds']:.0f}",
                ]
            )
    header = [
        "set",
        "network",
        "hard (%)",
        "random real, hard (%)",
        "soft (%)",
        "random real, soft (%)",
        "full set (%)",
        "IOR",
        "HLR",
        "LRS",
        "ARS",
        "soft IOR",
        "soft LRS",
        "seconds",
    ]
    return md_table(header, rows, right=1)


def parse_set(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--set {text!r} must look like NAME=PATH/distilled.pt")
    return name, path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        type=parse_set,
        required=True,
        metavar="NAME=PATH",
        help="a distilled set file (repeatable)",
    )
    parser.add_argument(
        "--networks",
        default="[{depth: 3, width: 128}, {name: resnet_ap, depth: 10, width: 16}]",
        help="YAML list of NetSpec fields",
    )
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full_set_epochs", type=int, default=1)
    parser.add_argument("--soft_labels", choices=("per_image", "per_view"), default="per_view")
    parser.add_argument("--teacher_epochs", type=int, default=2)
    parser.add_argument("--teacher_cache", default=str(Path.home() / ".cache" / "lightning-dd" / "teachers"))
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--reports", default="docs/ranking", help="folder of the per-set JSON reports (kept: a rerun reuses them)"
    )
    parser.add_argument("--output", default="docs/benchmarks.md")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    reports = {name: run_set(name, path, args) for name, path in args.sets}
    text = table(reports)
    print(text)
    body = "\n\n".join([
        "## DD-Ranking scores: hard and soft labels, several networks",
        text,
        f"Each set, random real images of the same storage and the full training set ({args.full_set_epochs} epoch(s)) trained under one "
        f"evaluation ({args.epochs} epochs, DSA + CutMix, {args.repeats} networks each), once more without augmentation for ARS and once with "
        f"soft labels ({args.soft_labels}) from a teacher trained {args.teacher_epochs} epoch(s) on the training split. Accuracies: test, mean +- "
        "sample std over the networks. Scores on fractions, from validation accuracy where the set's data held a split out: IOR = set - random real, "
        "HLR = full set - set, LRS and ARS DD-Ranking's squashed combinations (0.269 = no better than the baselines). Seconds: every network "
        "of the row's report." + (f" {args.note}" if args.note else ""),
        provenance("ranking", argv, 1, args.device),
    ])  # fmt: skip
    write_section(Path(args.output), "dd-ranking", body)


if __name__ == "__main__":
    main()
