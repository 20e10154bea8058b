"""Grouped horizontal bar charts as standalone SVG text, for report.html: no plotting library,
no script, every string XML-escaped. Horizontal so that long backend names stay readable."""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999")
INVALID_COLOUR = "#C62828"
MARKER_COLOUR = "#222222"
# Text is not measured in SVG without a script: estimate widths generously instead.
CHAR_W, SMALL_CHAR_W = 7.2, 6.6
MAX_NAME_CHARS = 48
BAR_H, BAR_GAP, GROUP_GAP = 14, 2, 12
PLOT_W, PAD = 360, 12  # two charts side by side on a wide screen


@dataclass(frozen=True)
class Bar:
    value: float | None  # None: no bar, only its label (e.g. "failed")
    label: str
    invalid: bool = False  # drawn hatched with a red outline; the label carries the "X "


@dataclass(frozen=True)
class Group:
    name: str
    bars: tuple[Bar, ...]  # one per series
    marker: float | None = None  # a reference line across the group, e.g. the accuracy target


@dataclass(frozen=True)
class Chart:
    title: str
    value_axis: str  # what the bars measure, with units
    category_axis: str  # what the groups are
    series: tuple[str, ...]
    groups: tuple[Group, ...]
    marker_label: str = "target"

    def has_data(self) -> bool:
        return any(bar.value is not None for group in self.groups for bar in group.bars)


def bar_chart(chart: Chart, uid: str) -> str:
    """The chart as an ``<svg>`` element; ``uid`` keeps its ids unique within one page."""
    names = [_shorten(g.name) for g in chart.groups]
    left = PAD + max(len(n) for n in [*names, chart.category_axis]) * CHAR_W + 10
    labels = [b.label for g in chart.groups for b in g.bars]
    right = PAD + 6 + max(map(len, labels), default=0) * SMALL_CHAR_W
    width = left + PLOT_W + right
    out: list[str] = []
    legend_bottom = _legend(out, chart, uid, width)
    top = legend_bottom + 24
    group_h = len(chart.series) * (BAR_H + BAR_GAP) - BAR_GAP
    bottom = top + len(chart.groups) * (group_h + GROUP_GAP)
    height = bottom + 46

    values = [b.value for g in chart.groups for b in g.bars if b.value is not None]
    ticks = _ticks(max([*values, *(g.marker for g in chart.groups if g.marker is not None)],
                       default=0.0))  # fmt: skip
    scale = PLOT_W / ticks[-1]
    for tick in ticks:
        x = left + tick * scale
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#e3e3e3"/>')
        out.append(_text(x, bottom + 16, f"{tick:g}", anchor="middle", size=11))
    out.append(f'<line x1="{left:.1f}" y1="{bottom}" x2="{left + PLOT_W:.1f}" y2="{bottom}" '
               'stroke="#555"/>')  # fmt: skip
    out.append(f'<line x1="{left:.1f}" y1="{top}" x2="{left:.1f}" y2="{bottom}" stroke="#555"/>')
    out.append(_text(left + PLOT_W / 2, bottom + 36, chart.value_axis, anchor="middle", bold=True))
    out.append(_text(left - 10, top - 8, chart.category_axis, anchor="end", bold=True))

    for index, (group, name) in enumerate(zip(chart.groups, names, strict=True)):
        y0 = top + GROUP_GAP / 2 + index * (group_h + GROUP_GAP)
        out.append(_text(left - 10, y0 + group_h / 2, name, anchor="end", tooltip=group.name))
        marker_end = (group.marker or 0.0) * scale + 2  # labels start clear of the marker
        for number, (series, bar) in enumerate(zip(chart.series, group.bars, strict=True)):
            y = y0 + number * (BAR_H + BAR_GAP)
            out.append(_bar(bar, left, y, scale, marker_end, uid, COLOURS[number % len(COLOURS)],
                            f"{group.name}, {series}"))  # fmt: skip
        if group.marker is not None:
            x = left + group.marker * scale
            out.append(
                f'<line x1="{x:.1f}" y1="{y0 - 4:.1f}" x2="{x:.1f}" y2="{y0 + group_h + 4:.1f}" '
                f'stroke="{MARKER_COLOUR}" stroke-width="2.5"><title>'
                f"{escape(f'{chart.marker_label}: {group.marker:g}')}</title></line>"
            )

    title = escape(chart.title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label={quoteattr(chart.title)} '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        'font-family="system-ui, sans-serif" font-size="12">'
        f"<title>{title}</title>"
        f'<defs><pattern id="{uid}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="3" height="6" fill="#fff" '
        'fill-opacity="0.65"/></pattern></defs>'
        f'<rect width="100%" height="100%" fill="#fff"/>'
        f"{_text(PAD, 22, chart.title, size=14, bold=True)}{''.join(out)}</svg>"
    )


def _bar(
    bar: Bar, x: float, y: float, scale: float, label_from: float, uid: str, colour: str, what: str
) -> str:
    tooltip = f"<title>{escape(f'{what}: {bar.label}')}</title>"
    mid = y + BAR_H / 2
    if bar.value is None:
        return _text(x + 6, mid, bar.label, size=11, colour="#666", italic=True)
    w = max(bar.value * scale, 1.0)  # a zero still shows where it is
    parts = [f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{BAR_H}" fill="{colour}">'
             f"{tooltip}</rect>"]  # fmt: skip
    if bar.invalid:
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{BAR_H}" '
                     f'fill="url(#{uid}-hatch)" stroke="{INVALID_COLOUR}" stroke-width="1.5">'
                     f"{tooltip}</rect>")  # fmt: skip
    parts.append(_text(x + max(w, label_from) + 5, mid, bar.label, size=11,
                       colour=INVALID_COLOUR if bar.invalid else "#222"))  # fmt: skip
    return "".join(parts)


def _legend(out: list[str], chart: Chart, uid: str, width: float) -> float:
    """Series swatches, then the marker and the invalid style when the chart has them, in rows
    that wrap at ``width``; returns the bottom of the last row."""
    items = [(name, COLOURS[i % len(COLOURS)]) for i, name in enumerate(chart.series)]
    if any(g.marker is not None for g in chart.groups):
        items.append((chart.marker_label, "marker"))
    if any(b.invalid for g in chart.groups for b in g.bars):
        items.append(("X invalid", "invalid"))
    x, y = float(PAD), 40.0
    for label, kind in items:
        item_w = 18 + len(label) * CHAR_W + 14
        if x + item_w > width - PAD and x > PAD:
            x, y = float(PAD), y + 18
        box = f'x="{x}" y="{y - 6}" width="12" height="12"'
        if kind == "marker":
            out.append(f'<line x1="{x + 6}" y1="{y - 6}" x2="{x + 6}" y2="{y + 6}" '
                       f'stroke="{MARKER_COLOUR}" stroke-width="2.5"/>')  # fmt: skip
        elif kind == "invalid":  # the hatch over grey, as it is drawn over a bar's colour
            out.append(f'<rect {box} fill="#999"/><rect {box} fill="url(#{uid}-hatch)" '
                       f'stroke="{INVALID_COLOUR}" stroke-width="1.5"/>')  # fmt: skip
        else:
            out.append(f'<rect {box} fill="{kind}"/>')
        out.append(_text(x + 18, y, label))
        x += item_w
    return y + 6


def _ticks(top: float) -> list[float]:
    """0 to a round number at or above ``top``, in about five steps of 1, 2, 2.5 or 5 x 10^k."""
    if top <= 0:
        top = 1.0
    raw = top / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _shorten(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"


def _text(
    x: float,
    y: float,
    text: str,
    *,
    anchor: str = "start",
    size: int = 12,
    colour: str = "#222",
    bold: bool = False,
    italic: bool = False,
    tooltip: str | None = None,
) -> str:
    style = (' font-weight="bold"' if bold else "") + (' font-style="italic"' if italic else "")
    hover = f"<title>{escape(tooltip)}</title>" if tooltip and tooltip != text else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" dominant-baseline="middle" '
        f'font-size="{size}" fill="{colour}"{style}>{hover}{escape(text)}</text>'
    )
