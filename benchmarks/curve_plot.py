"""Accuracy-vs-time figures of benchmarks/curve.py, drawn with matplotlib (the ``bench`` extra), from a study's CSV
(the rows its tables come from), so a figure can be redrawn without the study folder::

    python -m benchmarks.curve_plot docs/curves/fashion_mnist-ipc1.csv   # writes the .png beside it
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from lightning_dd.utils.atomic import atomic_open

# Round times for the log-x axis (matplotlib's log locators tick at powers of the base: 100 s, not 2 min).
NICE_SECONDS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 14400, 28800, 57600, 86400)
DPI = 100


def draw_curves(
    series: list[dict], lines: list[dict], title: str, xlabel: str, ylabel: str, size: tuple[int, int] = (1100, 640)
):
    """A matplotlib ``Figure`` of ``size`` pixels (Agg canvas): :func:`plot_curves` without the file."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    except ImportError:
        raise ImportError("the curve figures need matplotlib: pip install -e '.[bench]'") from None
    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    # Room on the right for the legend, as wide in pixels whatever the figure's size.
    figure.subplots_adjust(left=95 / size[0], right=1 - 330 / size[0], top=1 - 50 / size[1], bottom=70 / size[1])
    axes = figure.add_subplot()
    handles, labels = [], []  # a curve's legend entry shows its band behind its line
    for s in series:
        if points := sorted(p for p in s["points"] if p[0] > 0):  # t <= 0 cannot sit on the log axis
            t, mean, std = zip(*points)
            colour = tuple(c / 255 for c in s["color"])
            band = axes.fill_between(
                t,
                [m - d for m, d in zip(mean, std)],
                [m + d for m, d in zip(mean, std)],
                color=colour,
                alpha=0.22,
                linewidth=0,
            )
            handles.append((band, axes.plot(t, mean, color=colour, linewidth=3, marker="o", markersize=6)[0]))
            labels.append(s["label"])
    for line in lines:
        dashed = bool(line.get("dashed"))
        handles.append(
            axes.axhline(
                line["value"],
                color=tuple(c / 255 for c in line["color"]),
                linewidth=2 if dashed else 1,
                linestyle="--" if dashed else "-",
            )
        )
        labels.append(line["label"])
    times = [p[0] for s in series for p in s["points"] if p[0] > 0]
    low, high = (min(times) / 1.3, max(times) * 1.3) if times else (1.0, 10.0)
    if high / low < 3:
        low, high = low / 1.5, high * 1.5
    axes.set(xscale="log", xlim=(low, high), axisbelow=True, xlabel=xlabel, ylabel=ylabel)
    ticks = []  # round times at least an eighth of the axis's log span apart, so that their labels never touch
    for t in (t for t in NICE_SECONDS if low <= t <= high):
        ticks += [t] if not ticks or t / ticks[-1] >= (high / low) ** (1 / 8) else []
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_major_formatter(
        FuncFormatter(lambda t, _: f"{t:g} s" if t < 60 else f"{t / 60:g} min" if t < 3600 else f"{t / 3600:g} h")
    )
    axes.grid(True, color="0.9")
    axes.set_title(title, loc="left")
    if handles:
        axes.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    return figure


def plot_curves(
    path: str | Path,
    series: list[dict],
    lines: list[dict],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (1100, 640),
) -> None:
    """A PNG: per ``{"label", "color": (r, g, b), "points": [(t, mean, std)]}`` a line in its band, per ``{"label", "value", "color", "dashed"}`` a level."""
    with atomic_open(path, "wb") as handle:
        draw_curves(series, lines, title, xlabel, ylabel, size).savefig(handle, format="png", dpi=DPI)


def figure_from_csv(path: str | Path) -> dict:
    """The arguments of :func:`plot_curves` for a study: the tables' points (:func:`benchmarks.curve.curve_points`) from its CSV,
    without a start snapshot before half the first checkpoint (it would stretch the log axis), our references solid, published ones dashed."""
    from .curve import CLOCKS, COLORS, PUBLISHED, PUBLISHED_COLORS, STUDY_MODES, curve_points

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{str(path)!r} holds no rows")
    numbers = ("nominal_s", "wall_s", "cpu_s", "steps", "acc_mean", "acc_std")
    runs = [
        {**r, **{k: float(r[k] or 0) for k in numbers}, "index": int(r["checkpoint"])}
        for r in rows
        if r["mode"] in STUDY_MODES and r["acc_mean"]
    ]
    first, clock = (
        min((r["nominal_s"] for r in runs if r["index"] > 0), default=0.0),
        rows[0].get("clock") or "wall",
    )  # CSVs before --clock: wall-clock
    series, x = [], f"{clock}_s"
    for mode, data in curve_points(runs).items():
        seeds, points = (
            len(data["seeds"]),
            [(p[x], p["mean"], p["std"]) for p in data["points"] if p["index"] > 0 or p[x] >= first / 2],
        )
        if points:
            series.append(
                {
                    "label": f"{STUDY_MODES[mode][0]} ({seeds} seed{'s' if seeds > 1 else ''})",
                    "color": COLORS[mode],
                    "points": points,
                }
            )
    refs = [r for r in rows if r["mode"] in ("random real", "full training set") and r["acc_mean"]]
    lines = [
        {
            "label": f"{r['mode']} (ours, {r['nets']} nets)",
            "value": float(r["acc_mean"]),
            "color": (90, 90, 90) if r["mode"] == "random real" else (0, 0, 0),
            "dashed": False,
        }
        for r in refs
    ]
    dataset, ipc = rows[0]["dataset"], int(rows[0]["ipc"])
    lines += [
        {"label": f"{k} (published)", "value": v, "color": PUBLISHED_COLORS[k], "dashed": True}
        for k, v in PUBLISHED.get((dataset, ipc), {}).items()
    ]
    curve_row = runs[0] if runs else rows[0]
    return {
        "series": series,
        "lines": lines,
        "title": f"{dataset}, IPC {ipc}: test accuracy vs distillation {CLOCKS[clock]}",
        "xlabel": f"{'CPU' if clock == 'cpu' else 'wall-clock'} seconds, pool pretraining included (log scale)",
        "ylabel": f"test accuracy (%), {curve_row['eval_net']}, {curve_row['eval_epochs']} epochs",
    }


def plot_csv(csv_path: str | Path, png_path: str | Path | None = None) -> Path:
    """Draw a study's figure from its CSV; by default the PNG is written beside the CSV."""
    out = Path(png_path) if png_path is not None else Path(csv_path).with_suffix(".png")
    plot_curves(out, **figure_from_csv(csv_path))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Redraw a curve study's figure from its CSV (benchmarks/curve.py).")
    parser.add_argument("csv", help="the study's CSV, e.g. docs/curves/fashion_mnist-ipc1.csv")
    parser.add_argument("--out", default=None, help="PNG to write (default: beside the CSV)")
    args = parser.parse_args()
    print(plot_csv(args.csv, args.out))
