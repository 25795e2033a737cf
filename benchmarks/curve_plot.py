"""A log-x line plot with mean +- std bands and dashed reference lines, drawn with Pillow.

Pillow is already a dependency of the library, so the benchmark draws its figure without adding
a plotting package. The figure is drawn at twice its size and scaled down for smooth lines.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from lightning_dd.atomic import atomic_open

NICE_SECONDS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 14400, 28800, 57600, 86400)
SCALE = 2  # supersampling factor


def _font(size: int):
    try:
        return ImageFont.load_default(size=size * SCALE)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


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


def y_range(values: list[float]) -> tuple[float, float, float]:
    """(low, high, tick step) covering ``values`` with a little room, within [0, 100]."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, 1.0)
    step = next(s for s in (0.5, 1, 2, 5, 10, 20) if span / s <= 8)
    low = max(0.0, math.floor((lo - 0.05 * span) / step) * step)
    high = min(100.0, math.ceil((hi + 0.05 * span) / step) * step)
    return low, max(high, low + step), step


def plot_curves(path: str | Path, series: list[dict], lines: list[dict], title: str, xlabel: str, ylabel: str, size: tuple[int, int] = (1100, 640)) -> None:
    """Write a PNG: one line with a band per series, horizontal lines for references.

    Args:
        series: ``{"label", "color": (r, g, b), "points": [(t > 0, mean, std), ...]}`` per curve.
        lines: ``{"label", "value", "color", "dashed"}`` per horizontal reference line.
        title, xlabel, ylabel: texts; x is drawn on a log scale.
    """
    width, height = size[0] * SCALE, size[1] * SCALE
    left, right, top, bottom = 95 * SCALE, 330 * SCALE, 50 * SCALE, 70 * SCALE
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    times = [t for s in series for t, _, _ in s["points"] if t > 0]
    t_low, t_high = (min(times) / 1.3, max(times) * 1.3) if times else (1.0, 10.0)
    if t_high / t_low < 3:
        t_low, t_high = t_low / 1.5, t_high * 1.5
    values = [m + d for s in series for _, m, sd in s["points"] for d in (-sd, sd)] + [line["value"] for line in lines]
    a_low, a_high, a_step = y_range(values or [0.0, 100.0])

    def px(t: float) -> float:
        return x0 + (math.log(t) - math.log(t_low)) / (math.log(t_high) - math.log(t_low)) * (x1 - x0)

    def py(a: float) -> float:
        return y1 - (a - a_low) / (a_high - a_low) * (y1 - y0)

    image = Image.new("RGBA", (width, height), (255, 255, 255, 255))
    draw = ImageDraw.Draw(image)
    small, normal = _font(13), _font(15)
    # grid and ticks
    a = a_low
    while a <= a_high + 1e-9:
        draw.line([(x0, py(a)), (x1, py(a))], fill=(230, 230, 230), width=SCALE)
        label = f"{a:g}"
        w = draw.textlength(label, font=small)
        draw.text((x0 - 8 * SCALE - w, py(a) - 8 * SCALE), label, fill=(60, 60, 60), font=small)
        a += a_step
    for t in x_ticks(t_low, t_high):
        draw.line([(px(t), y0), (px(t), y1)], fill=(230, 230, 230), width=SCALE)
        label = format_tick_seconds(t)
        w = draw.textlength(label, font=small)
        draw.text((px(t) - w / 2, y1 + 8 * SCALE), label, fill=(60, 60, 60), font=small)
    draw.rectangle([x0, y0, x1, y1], outline=(80, 80, 80), width=SCALE)
    # bands, on a transparent layer so they blend
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    layer_draw = ImageDraw.Draw(layer)
    for s in series:
        pts = [p for p in s["points"] if p[0] > 0]
        if len(pts) > 1:
            upper = [(px(t), py(min(a_high, m + sd))) for t, m, sd in pts]
            lower = [(px(t), py(max(a_low, m - sd))) for t, m, sd in reversed(pts)]
            layer_draw.polygon(upper + lower, fill=(*s["color"], 55))
    image = Image.alpha_composite(image, layer)
    draw = ImageDraw.Draw(image)
    # reference lines
    for line in lines:
        y = py(line["value"])
        if line.get("dashed"):
            x, dash, gap = x0, 14 * SCALE, 8 * SCALE
            while x < x1:
                draw.line([(x, y), (min(x + dash, x1), y)], fill=line["color"], width=2 * SCALE)
                x += dash + gap
        else:
            draw.line([(x0, y), (x1, y)], fill=line["color"], width=SCALE)
    # curves
    for s in series:
        pts = [(px(t), py(m)) for t, m, _ in s["points"] if t > 0]
        if len(pts) > 1:
            draw.line(pts, fill=s["color"], width=3 * SCALE, joint="curve")
        for x, y in pts:
            r = 4 * SCALE
            draw.ellipse([x - r, y - r, x + r, y + r], fill=s["color"])
    # texts and legend
    draw.text((x0, 14 * SCALE), title, fill=(0, 0, 0), font=normal)
    w = draw.textlength(xlabel, font=small)
    draw.text(((x0 + x1) / 2 - w / 2, y1 + 34 * SCALE), xlabel, fill=(0, 0, 0), font=small)
    text_w = int(draw.textlength(ylabel, font=small)) + 4 * SCALE
    label_image = Image.new("RGBA", (text_w, 20 * SCALE), (255, 255, 255, 0))
    ImageDraw.Draw(label_image).text((0, 0), ylabel, fill=(0, 0, 0), font=small)
    rotated = label_image.rotate(90, expand=True)
    image.alpha_composite(rotated, (12 * SCALE, max(0, int((y0 + y1) / 2 - rotated.height / 2))))
    lx, ly = x1 + 20 * SCALE, y0
    for entry in [{**s, "dashed": False, "band": True} for s in series] + list(lines):
        y = ly + 10 * SCALE
        if entry.get("band"):
            draw.rectangle([lx, y - 6 * SCALE, lx + 34 * SCALE, y + 6 * SCALE], fill=tuple(int(255 - (255 - c) * 0.22) for c in entry["color"]))
        if entry.get("dashed"):
            draw.line([(lx, y), (lx + 14 * SCALE, y)], fill=entry["color"], width=2 * SCALE)
            draw.line([(lx + 20 * SCALE, y), (lx + 34 * SCALE, y)], fill=entry["color"], width=2 * SCALE)
        else:
            draw.line([(lx, y), (lx + 34 * SCALE, y)], fill=entry["color"], width=(3 if entry.get("band") else 1) * SCALE)
        draw.text((lx + 42 * SCALE, y - 8 * SCALE), entry["label"], fill=(0, 0, 0), font=small)
        ly += 24 * SCALE
    final = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    with atomic_open(path, "wb") as handle:
        final.save(handle, format="PNG")
