"""Accuracy-vs-wall-clock figures of benchmarks/curve.py, drawn with matplotlib (the ``bench`` extra).

:func:`plot_curves` draws one line with a mean +- std band per curve on a log-x axis, and
horizontal reference lines (published values dashed). :func:`figure_from_csv` rebuilds those
curves and lines from a study's CSV, the rows its tables come from, so a figure can be redrawn
or restyled without the study folder::

    python benchmarks/curve_plot.py docs/curves/fashion_mnist-ipc1.csv   # writes the .png beside it

matplotlib is needed only here: ``pip install -e '.[bench]'``; the library does not import it.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from lightning_dd.atomic import atomic_open

NICE_SECONDS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 14400, 28800, 57600, 86400)
DPI = 100


def format_tick_seconds(seconds: float) -> str:
    """``30 s``, ``2 min``, ``1 h`` for axis ticks."""
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def x_ticks(low: float, high: float) -> list[float]:
    """Round times (seconds, minutes, hours) inside ``[low, high]``, at most about eight."""
    candidates = [t for t in NICE_SECONDS if low <= t <= high]
    ratio = 1.0
    while True:
        ticks: list[float] = []
        for t in candidates:
            if not ticks or t / ticks[-1] >= ratio:
                ticks.append(t)
        if len(ticks) <= 8:
            return ticks
        ratio *= 1.5


def _rgb(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(c / 255 for c in colour)  # type: ignore[return-value]


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("the curve figures need matplotlib: pip install -e '.[bench]'") from None
    return Figure, FigureCanvasAgg


def draw_curves(series: list[dict], lines: list[dict], title: str, xlabel: str, ylabel: str, size: tuple[int, int] = (1100, 640)):
    """A matplotlib ``Figure`` of ``size`` pixels (Agg canvas): :func:`plot_curves` without the file."""
    Figure, FigureCanvasAgg = _matplotlib()
    from matplotlib.ticker import FixedLocator, NullLocator

    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    # Room on the right for the legend, as wide in pixels whatever the figure's size.
    figure.subplots_adjust(left=95 / size[0], right=1 - 330 / size[0], top=1 - 50 / size[1], bottom=70 / size[1])
    axes = figure.add_subplot()
    handles, labels = [], []  # a curve's legend entry shows its band behind its line
    for s in series:
        points = sorted(p for p in s["points"] if p[0] > 0)
        if not points:
            continue
        t, mean, std = (list(column) for column in zip(*points))
        colour = _rgb(s["color"])
        band = axes.fill_between(t, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)], color=colour, alpha=0.22, linewidth=0)
        (curve,) = axes.plot(t, mean, color=colour, linewidth=3, marker="o", markersize=6)
        handles.append((band, curve))
        labels.append(s["label"])
    for line in lines:
        dashed = bool(line.get("dashed"))
        handles.append(axes.axhline(line["value"], color=_rgb(line["color"]), linewidth=2 if dashed else 1, linestyle="--" if dashed else "-"))
        labels.append(line["label"])
    axes.set_xscale("log")
    times = [p[0] for s in series for p in s["points"] if p[0] > 0]
    low, high = (min(times) / 1.3, max(times) * 1.3) if times else (1.0, 10.0)
    if high / low < 3:
        low, high = low / 1.5, high * 1.5
    axes.set_xlim(low, high)
    ticks = x_ticks(low, high)
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticklabels([format_tick_seconds(t) for t in ticks])
    axes.grid(True, color="0.9")
    axes.set_axisbelow(True)
    axes.set_title(title, loc="left")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if handles:
        axes.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    return figure


def plot_curves(path: str | Path, series: list[dict], lines: list[dict], title: str, xlabel: str, ylabel: str, size: tuple[int, int] = (1100, 640)) -> None:
    """Write a PNG of ``size`` pixels: one line with a band per series, horizontal lines for references.

    Args:
        series: ``{"label", "color": (r, g, b), "points": [(t > 0, mean, std), ...]}`` per curve
            (colours 0-255), drawn with a mean +- std band; points at ``t <= 0`` cannot sit on the
            log axis and are left out.
        lines: ``{"label", "value", "color", "dashed"}`` per horizontal reference line.
        title, xlabel, ylabel: texts; x is drawn on a log scale with ticks at round times.
    """
    figure = draw_curves(series, lines, title, xlabel, ylabel, size)
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=DPI)


# ------------------------------------------------------------------------------ from the CSV
def figure_from_csv(path: str | Path) -> dict:
    """The arguments of :func:`plot_curves` for a study, rebuilt from its CSV (benchmarks/curve.py).

    Per mode, a checkpoint is a point once every seed of the mode has it evaluated: its time is
    the mean wall-clock over seeds, its accuracy the mean over seeds, its band the standard
    deviation over seeds (with one seed, that seed's spread over evaluation networks). The start
    snapshot is left out unless it comes after half the first checkpoint (pool pretraining),
    since at about 0 s it would stretch the log axis. Reference rows become solid lines; the
    published values of the study's dataset and IPC (benchmarks/curve.py) become dashed lines.
    """
    from curve import COLORS, PUBLISHED, PUBLISHED_COLORS, STUDY_MODES

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{str(path)!r} holds no rows")
    runs = [r for r in rows if r["mode"] in STUDY_MODES and r["acc_mean"]]
    positive = [float(r["nominal_s"]) for r in runs if int(r["checkpoint"]) > 0]
    first = min(positive) if positive else 0.0
    series = []
    for mode in dict.fromkeys(r["mode"] for r in runs):
        mine = [r for r in runs if r["mode"] == mode]
        seeds = {r["seed"] for r in mine}
        points = []
        for index in sorted({int(r["checkpoint"]) for r in mine}):
            at = [r for r in mine if int(r["checkpoint"]) == index]
            if len(at) < len(seeds):
                continue
            means = [float(r["acc_mean"]) for r in at]
            wall = statistics.fmean(float(r["wall_s"]) for r in at)
            if index == 0 and wall < first / 2:
                continue
            points.append((wall, statistics.fmean(means), statistics.stdev(means) if len(means) > 1 else float(at[0]["acc_std"])))
        if points:
            series.append({"label": f"{STUDY_MODES[mode][0]} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})", "color": COLORS[mode], "points": points})
    lines = [
        {"label": f"{r['mode']} (ours, {r['nets']} nets)", "value": float(r["acc_mean"]), "color": (90, 90, 90) if r["mode"] == "random real" else (0, 0, 0), "dashed": False}
        for r in rows
        if r["mode"] in ("random real", "full training set") and r["acc_mean"]
    ]
    dataset, ipc = rows[0]["dataset"], int(rows[0]["ipc"])
    lines += [{"label": f"{k} (published)", "value": v, "color": PUBLISHED_COLORS[k], "dashed": True} for k, v in PUBLISHED.get((dataset, ipc), {}).items()]
    curve_row = runs[0] if runs else rows[0]
    return {
        "series": series,
        "lines": lines,
        "title": f"{dataset}, IPC {ipc}: test accuracy vs distillation wall-clock",
        "xlabel": "wall-clock seconds, pool pretraining included (log scale)",
        "ylabel": f"test accuracy (%), {curve_row['eval_net']}, {curve_row['eval_epochs']} epochs",
    }


def plot_csv(csv_path: str | Path, png_path: str | Path | None = None) -> Path:
    """Draw a study's figure from its CSV; by default the PNG is written beside the CSV."""
    out = Path(png_path) if png_path is not None else Path(csv_path).with_suffix(".png")
    plot_curves(out, **figure_from_csv(csv_path))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Redraw a curve study's figure from its CSV (benchmarks/curve.py).")
    parser.add_argument("csv", help="the study's CSV, e.g. docs/curves/fashion_mnist-ipc1.csv")
    parser.add_argument("--out", default=None, help="PNG to write (default: beside the CSV)")
    args = parser.parse_args(argv)
    print(plot_csv(args.csv, args.out))


if __name__ == "__main__":
    main()
