"""Bar charts drawn on the server as inline SVG geometry, for the console's usage page.

:func:`bars` turns categories (days, channels, personas) and named series of counts into
rectangles, axis ticks and labels; the template (``_chart.html``) writes them as SVG
elements. Nothing here is HTML: every label reaches the page through the template's
autoescaping. No script draws anything, so the strict Content-Security-Policy holds, and
every chart is shown beside a table of the same numbers (the accessible form).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["COLOURS", "Bar", "Chart", "bars", "nice_ceiling"]

# One colour per series, in order; chosen to stay apart for common colour blindness.
COLOURS = ("#2557d6", "#e08a00", "#15803d", "#b91c1c", "#7c3aed", "#0e7490")
_WIDTH = 640
_HEIGHT = 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 8, 8, 34


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str  # "category · series: value", the bar's tooltip


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    width: int
    height: int
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[float, str], ...]  # (y, value) of the horizontal grid lines
    labels: tuple[tuple[float, str], ...]  # (x, category) under the bars
    legend: tuple[tuple[str, str], ...]  # (series, colour)
    left: int = _LEFT
    right: int = _WIDTH - _RIGHT
    baseline: int = _HEIGHT - _BOTTOM


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if factor * step >= value:
                return max(1, factor * step)
        step *= 10


def bars(title: str, categories: Sequence[str], series: Mapping[str, Sequence[int]]) -> Chart:
    """Grouped bars: one group per category, one bar per series inside it."""
    top = nice_ceiling(max((v for values in series.values() for v in values), default=0))
    plot_width = _WIDTH - _LEFT - _RIGHT
    plot_height = _HEIGHT - _TOP - _BOTTOM
    group = plot_width / max(1, len(categories))
    width = max(1.0, group * 0.8 / max(1, len(series)))
    drawn: list[Bar] = []
    for s, (name, values) in enumerate(series.items()):
        colour = COLOURS[s % len(COLOURS)]
        for c, value in enumerate(values):
            height = plot_height * value / top
            drawn.append(
                Bar(
                    x=round(_LEFT + c * group + group * 0.1 + s * width, 2),
                    y=round(_TOP + plot_height - height, 2),
                    width=round(width, 2),
                    height=round(height, 2),
                    colour=colour,
                    label=f"{categories[c]} · {name}: {value}",
                )
            )
    # Whole-number steps: counts are integers (top is 1, 2 or 5 times a power of ten).
    steps = top if top <= 5 else (5 if top % 5 == 0 else 4)
    ticks = tuple(
        (round(_TOP + plot_height * (1 - n / steps), 2), f"{top * n // steps}")
        for n in range(steps + 1)
    )
    # At most about twelve category labels fit under the axis; show every k-th one.
    every = max(1, -(-len(categories) // 12))
    labels = tuple(
        (round(_LEFT + c * group + group / 2, 2), name)
        for c, name in enumerate(categories)
        if c % every == 0
    )
    legend = tuple((name, COLOURS[s % len(COLOURS)]) for s, name in enumerate(series))
    return Chart(
        title=title,
        width=_WIDTH,
        height=_HEIGHT,
        bars=tuple(drawn),
        ticks=ticks,
        labels=labels,
        legend=legend,
    )
