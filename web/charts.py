"""Line charts of a training's epochs as inline SVG, drawn on the server (no chart library).

One chart per quantity (the training loss; the validation metric the run is chosen by),
epochs along the bottom, labelled axes and the last value written beside its point, so
that a glance tells where the run stands.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

WIDTH, HEIGHT = 460, 220
LEFT, RIGHT, TOP, BOTTOM = 62, 70, 30, 40


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    for factor in (1, 2, 5, 10):
        if (high - low) / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def line_chart(title: str, points: list[tuple[int, float]], colour: str = "#1f5fa8", chart_id: str = "") -> str:
    """An SVG of ``points`` (epoch, value); a short note when there are none yet."""
    head = (f'<svg class="chart" id="{escape(chart_id)}" role="img" aria-label="{escape(title)}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" data-points="{len(points)}">'
            f'<text x="{LEFT}" y="18" class="chart-title">{escape(title)}</text>')
    finite = [(e, v) for e, v in points if v is not None and math.isfinite(v)]
    if not finite:
        return head + f'<text x="{LEFT}" y="{HEIGHT // 2}" class="chart-note">no finished epoch yet</text></svg>'
    epochs = [e for e, _ in finite]
    values = [v for _, v in finite]
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 0.5 * (abs(low) or 1), high + 0.5 * (abs(high) or 1)
    pad = (high - low) * 0.08
    low, high = low - pad, high + pad
    first, last = min(epochs), max(epochs)
    span = max(last - first, 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(epoch: float) -> float:
        return LEFT + (epoch - first) / span * plot_w

    def y(value: float) -> float:
        return TOP + (high - value) / (high - low) * plot_h

    parts = [head]
    for tick in _ticks(low, high):
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" class="grid"/>'
                     f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" class="tick" text-anchor="end">{_label(tick)}</text>')
    for tick in _ticks(first, last, count=min(6, span)):
        if float(tick).is_integer():
            parts.append(f'<text x="{x(tick):.1f}" y="{TOP + plot_h + 16}" class="tick" '
                         f'text-anchor="middle">{int(tick)}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 6}" class="axis" text-anchor="middle">epoch</text>'
                 f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" class="axis-line"/>'
                 f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" class="axis-line"/>')
    path = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in finite)
    parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5"/>')
    parts += [f'<circle cx="{x(e):.1f}" cy="{y(v):.1f}" r="3.5" fill="{colour}" class="point"/>' for e, v in finite]
    e, v = finite[-1]
    parts.append(f'<text x="{x(e) + 7:.1f}" y="{y(v) + 4:.1f}" class="last">{_label(v)}</text></svg>')
    return "".join(parts)


def epoch_charts(history: list[dict[str, Any]], monitor_name: str = "validation metric") -> list[str]:
    """The loss chart and the validation chart of a run's epoch records."""
    loss = [(int(r["epoch"]), r.get("train_loss")) for r in history if "epoch" in r]
    watched = [(int(r["epoch"]), r.get("monitor")) for r in history if "epoch" in r]
    return [line_chart("Training loss", loss, "#b5472f", "loss-chart"),
            line_chart(f"Validation: {monitor_name} (the run keeps its best epoch)", watched, "#1f5fa8",
                       "metric-chart")]
