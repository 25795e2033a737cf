"""The published protocol's results, one line per IPC, and the README's results table: both written from the results files, never by hand.

Each results file is a ``benchmarks.protocol`` study of one config under ``evaluation.protocol=published`` (IDC's evaluation:
ConvNet-3 w128, 1 000 epochs, final epoch) with a validation split: its candidates are compared on validation accuracy, the
chosen one's test accuracy is reported (mean +- sample std over every network of every distillation seed), beside random real
images of the same storage under the same evaluation.

    python -m benchmarks.published

Writes the section ``published-protocol`` of ``--output`` and the ``results-table`` section of ``--readme`` from :data:`STUDIES`
(a test checks that the README's table is what these files give).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .protocol import RANDOM_REAL, chosen_variant
from .report import cell, provenance, write_section
from .runner import ResultStore

# The best published Fashion-MNIST figure per IPC (ConvNet-3 w128, 1 000 epochs): IDC 81.0 / 86.0 (multi-formation),
# IDC-I 89.1 at IPC 50 (factor 1), from the IDC authors' README.
PUBLISHED = {1: (81.0, "IDC"), 10: (86.0, "IDC"), 50: (89.1, "IDC-I")}
# IDC's schedule: 2 000 outer iterations x 100 inner (matching steps), the budget behind the published figures.
PAPER_STEPS = 2000 * 100
# IPC -> (results file, config): the studies behind the lines and the README table.
STUDIES = {
    1: ("docs/published-ipc1.jsonl", "configs/fashion_mnist/ipc1_cpu.yaml"),
    10: ("docs/published-ipc10.jsonl", "configs/fashion_mnist/ipc10_cpu.yaml"),
}


def summaries(studies: dict[int, tuple[str, str]], ipcs: list[int], root: Path = Path(".")) -> dict[int, dict | None]:
    """Per IPC, :func:`study_summary` of its results file (None where there is no file or no choice yet)."""
    out = {}
    for ipc in ipcs:
        path = root / studies[ipc][0] if ipc in studies else None
        out[ipc] = (
            study_summary(ResultStore(path, ("variant", "seed")).rows()) if path is not None and path.exists() else None
        )
    return out


def study_summary(rows: list[dict]) -> dict | None:
    """The chosen variant of one study, its test accuracies over all networks, random real's, and the CPU time spent (None before a choice)."""
    variants = sorted({r["variant"] for r in rows} - {RANDOM_REAL})
    chosen = chosen_variant(rows, variants)
    if chosen is None:
        return None
    mine = [r for r in rows if r["variant"] == chosen]
    bar = [a for r in rows if r["variant"] == RANDOM_REAL for a in r["accuracies"]]
    per_set = sum(r.get("fit_cpu_seconds", 0.0) for r in mine) / len(mine) / 3600
    study = sum(r.get("fit_cpu_seconds", 0.0) + r.get("eval_cpu_seconds", 0.0) for r in rows) / 3600
    return {
        "chosen": chosen, "candidates": len(variants), "seeds": len(mine), "nets": len(mine[0]["accuracies"]),
        "accuracies": [a for r in mine for a in r["accuracies"]], "random_real": bar, "steps": sorted({r.get("steps", 0) for r in mine}),
        "set_cpu_hours": per_set, "study_cpu_hours": study, "epochs": mine[0].get("epochs"),
    }  # fmt: skip


def published_line(ipc: int, summary: dict | None) -> str:
    """``IPC 10: 86.3 % (published 86.0 %), random real 79.1 %, 9.5 CPU-hours, 2 seeds x 3 nets, chosen on validation``."""
    target, source = PUBLISHED.get(ipc, (None, ""))
    published = f" (published {target:.1f} %, {source})" if target is not None else ""
    if summary is None:
        return f"IPC {ipc}: not measured yet{published}."
    s = summary
    bar = f"random real {cell(s['random_real'], count=False)} %" if s["random_real"] else "random real not measured yet"
    verdict = (
        ""
        if target is None
        else (
            " (reached)"
            if cell_mean(s["accuracies"]) >= target
            else f" ({target - cell_mean(s['accuracies']):.1f} points below)"
        )
    )
    paper = s["set_cpu_hours"] / max(s["steps"]) * PAPER_STEPS
    return (f"IPC {ipc}: {cell(s['accuracies'], count=False)} %{published}{verdict}, {bar}, {s['set_cpu_hours']:.2f} CPU-hours per set "
            f"({'/'.join(map(str, s['steps']))} matching steps; pool pretraining counted in the run that built it; the study {s['study_cpu_hours']:.1f} CPU-hours with its evaluations), "
            f"{s['seeds']} seed{'s' if s['seeds'] > 1 else ''} x {s['nets']} nets, `{s['chosen']}` chosen on validation among {s['candidates']}; "
            f"the paper's {PAPER_STEPS:,} matching steps at this step cost: about {paper:,.0f} CPU-hours")  # fmt: skip


def cell_mean(values: list[float]) -> float:
    return sum(values) / len(values)


def readme_table(summaries: dict[int, dict | None], studies: dict[int, tuple[str, str]]) -> str:
    """The README's results table: one row per IPC, the same figures as the published-protocol section."""
    lines = [
        "| Fashion-MNIST, images per class | config | distilled (%) | random real (%) | published (%) | CPU-hours per set |",
        "|---|---|---|---|---|---:|",
    ]
    for ipc, s in sorted(summaries.items()):
        config = f"`{Path(studies[ipc][1]).relative_to('configs')}`" if ipc in studies else "-"
        target = PUBLISHED.get(ipc, (None, ""))
        published = f"{target[0]:.1f} ({target[1]})" if target[0] is not None else "-"
        if s is None:
            lines.append(f"| {ipc} | {config} | not measured yet | - | {published} | - |")
            continue
        bar = cell(s["random_real"], count=False) if s["random_real"] else "-"
        lines.append(
            f"| {ipc} | {config} | {cell(s['accuracies'], count=False)} | {bar} | {published} | {s['set_cpu_hours']:.2f} |"
        )
    return "\n".join(lines)


def readme_drift(readme: str, root: Path = Path(".")) -> str | None:
    """Why the README's results table is not what the results files give (None when it is)."""
    start, end = "<!-- results-table:start -->\n", "\n<!-- results-table:end -->"
    if start not in readme or end not in readme:
        return "the README has no generated results table"
    written = readme.split(start, 1)[1].split(end, 1)[0]
    expected = readme_table(summaries(STUDIES, sorted({*STUDIES, *PUBLISHED}), root), STUDIES)
    return None if written == expected else "the README's results table differs from the results files"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ipcs",
        type=int,
        nargs="+",
        default=[1, 10, 50],
        help="IPCs with a line (those without a study read 'not measured yet')",
    )
    parser.add_argument("--output", default="docs/benchmarks.md")
    parser.add_argument("--readme", default="README.md")
    parser.add_argument(
        "--note", default="", help="a sentence under the lines (what is missing, how the runs shared the machine)"
    )
    args = parser.parse_args(argv)
    found = summaries(STUDIES, args.ipcs)
    lines = "\n".join(f"- {published_line(ipc, s)}" for ipc, s in found.items())
    print(lines)
    body = "\n\n".join([
        "## Published protocol",
        lines,
        "Test accuracy under IDC's evaluation (ConvNet-3 width 128, instance norm, 1 000 epochs, SGD 0.01 x0.2 at 2/3 and 5/6, DSA with one "
        "spatial transform per batch, CutMix p 0.5, final epoch) of the candidate with the best validation accuracy (1 000 training images "
        "per class held out; distillation, the pool and random real never see them); mean +- sample std over every network of every "
        "distillation seed; random real: 3 draws per seed, same evaluation. CPU-hours per set: distillation, and pool pretraining in the run that built the cached pool, "
        "one thread. Results files: " + ", ".join(f"`{path}`" for path, _ in STUDIES.values()) + "." + (f" {args.note}" if args.note else ""),
        provenance("published", argv, 1),
    ])  # fmt: skip
    write_section(Path(args.output), "published-protocol", body)
    write_section(Path(args.readme), "results-table", readme_table(found, STUDIES))


if __name__ == "__main__":
    main()
