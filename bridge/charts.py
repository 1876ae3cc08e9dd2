"""The sign-in statistics chart: a :class:`~bridge.stats.Series` drawn as inline SVG, on the server.

This module owns how the statistics look: stacked bars per hour or day (one
colour per outcome, each at least 3:1 against white, successes at the bottom),
a y axis with a few round numbers, x labels in UTC, a legend, and for people
who cannot see the chart a ``<title>``/``<desc>`` summary plus the same numbers
as a visually hidden table. It is a pure function of its input: no request,
no database, no JavaScript, no external library; and the markup is well-formed
XML (so a page's CSP with ``style-src 'self'`` holds: no inline styles).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from markupsafe import Markup

from bridge.stats import Outcome, Series

#: One colour per outcome; each reaches at least 3:1 contrast against white (WCAG 1.4.11).
COLOURS: dict[Outcome, str] = {
    Outcome.SUCCESS: "#1a7f37",
    Outcome.WRONG_PASSWORD: "#b91c1c",
    Outcome.ACCESS_RULE: "#7c3aed",
    Outcome.NO_EMAIL: "#b45309",
    Outcome.SHARED_EMAIL: "#0e7490",
    Outcome.IMIS_UNAVAILABLE: "#475569",
    Outcome.THROTTLED: "#1d4ed8",
    Outcome.ACCOUNT_DISABLED: "#9d174d",
    Outcome.ORGANIZATION: "#854d0e",
    Outcome.OTHER: "#6b7280",
}
TEXT = "#1f2328"
GRID = "#d0d7de"

WIDTH = 640
PLOT_LEFT = 48
PLOT_RIGHT = WIDTH - 26
PLOT_TOP = 14
PLOT_BOTTOM = 196
FONT = 14
LEGEND_TOP = 270
LEGEND_ROW = 22
LEGEND_COLUMNS = 3

_ID = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class Chart:
    """A drawn series: the SVG and its data table; as HTML, a ``<figure>`` holding both."""

    svg: Markup
    table: Markup

    def __html__(self) -> str:
        return str(Markup('<figure class="chart">{}{}</figure>').format(self.svg, self.table))

    def __str__(self) -> str:
        return self.__html__()


def nice_maximum(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power: int = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def _when(series: Series, start: int) -> str:
    moment = time.gmtime(start)
    if series.step_seconds < 24 * 3600:
        return time.strftime("%d %b %H:00", moment)
    return time.strftime("%a %d %b", moment)


def _tick(series: Series, start: int) -> str:
    moment = time.gmtime(start)
    return time.strftime("%H:00" if series.step_seconds < 24 * 3600 else "%d %b", moment)


def _heading(label: str) -> str:
    """A label at the start of a sentence ("Wrong password"; "iMIS" keeps its spelling)."""
    return label if label.startswith("iMIS") else label[:1].upper() + label[1:]


def _summary(series: Series) -> str:
    totals = series.totals
    if not any(totals.values()):
        return f"{series.title}: no sign-ins."
    refused = [f"{n} {o.label}" for o, n in totals.items() if n and o is not Outcome.SUCCESS]
    text = f"{series.title}: {series.successes} successful sign-ins, {series.refusals} refused"
    return text + (f" ({', '.join(refused)})." if refused else ".")


def _axis_title(series: Series) -> str:
    return "Hour (UTC)" if series.step_seconds < 24 * 3600 else "Day (UTC)"


def sign_in_chart(series: Series, *, chart_id: str = "sign-ins") -> Chart:
    """``series`` as an accessible stacked bar chart (SVG) and its data table.

    ``chart_id`` makes the ids of the title and description unique in the page
    (two charts on one page need two ids).
    """
    cid = _ID.sub("-", chart_id) or "chart"
    shown = series.outcomes
    n = max(1, len(series.buckets))
    top = nice_maximum(max((b.total for b in series.buckets), default=0))
    plot_height = PLOT_BOTTOM - PLOT_TOP
    slot = (PLOT_RIGHT - PLOT_LEFT) / n
    bar = max(1.0, slot * 0.7)
    legend_rows = math.ceil(len(shown) / LEGEND_COLUMNS)
    height = LEGEND_TOP + (legend_rows - 1) * LEGEND_ROW - LEGEND_ROW // 2 + 10

    def y(value: float) -> float:
        return PLOT_BOTTOM - plot_height * value / top

    parts: list[Markup] = [
        Markup(
            '<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg" width="100%" '
            'viewBox="0 0 {w} {h}" role="img" aria-labelledby="{id}-title {id}-desc" '
            'font-family="system-ui, sans-serif" font-size="{f}" fill="{t}">'
        ).format(w=WIDTH, h=height, id=cid, f=FONT, t=TEXT),
        Markup('<title id="{}-title">Sign-ins, {}</title>').format(cid, series.title.lower()),
        Markup('<desc id="{}-desc">{}</desc>').format(cid, _summary(series)),
    ]
    # The y axis: grid lines at 0, half and the top, with their values.
    for value in sorted({0, top // 2, top} if top > 1 else {0, 1}):
        parts.append(
            Markup(
                '<line class="grid" x1="{x1}" x2="{x2}" y1="{y:.1f}" y2="{y:.1f}" stroke="{g}"/>'
                '<text class="y-label" x="{x:.1f}" y="{ty:.1f}" text-anchor="end">{v}</text>'
            ).format(
                x1=PLOT_LEFT,
                x2=PLOT_RIGHT,
                y=y(value),
                g=GRID,
                x=PLOT_LEFT - 6,
                ty=y(value) + FONT / 3,
                v=value,
            )
        )
    parts.append(
        Markup(
            '<text class="axis-title" x="{x}" y="{y}" text-anchor="middle" '
            'transform="rotate(-90 {x} {y})">Sign-ins</text>'
        ).format(x=14, y=(PLOT_TOP + PLOT_BOTTOM) // 2)
    )
    # The bars: one stack per bucket, successes at the bottom.
    label_every = 6 if series.step_seconds < 24 * 3600 else 7
    for i, bucket in enumerate(series.buckets):
        x = PLOT_LEFT + i * slot + (slot - bar) / 2
        base = 0
        for outcome in shown:
            number = bucket[outcome]
            if not number:
                continue
            parts.append(
                Markup(
                    '<rect class="bar" data-outcome="{o}" data-count="{n}" x="{x:.1f}" '
                    'y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{c}">'
                    "<title>{when}: {n} {label}</title></rect>"
                ).format(
                    o=outcome.value,
                    n=number,
                    x=x,
                    y=y(base + number),
                    w=bar,
                    h=y(base) - y(base + number),
                    c=COLOURS[outcome],
                    when=_when(series, bucket.start),
                    label=outcome.label,
                )
            )
            base += number
        if (len(series.buckets) - 1 - i) % label_every == 0:
            parts.append(
                Markup(
                    '<text class="x-label" x="{x:.1f}" y="{y}" text-anchor="middle">{t}</text>'
                ).format(x=x + bar / 2, y=PLOT_BOTTOM + FONT + 4, t=_tick(series, bucket.start))
            )
    parts.append(
        Markup(
            '<line class="axis" x1="{x1}" x2="{x2}" y1="{y}" y2="{y}" stroke="{t}"/>'
            '<text class="axis-title" x="{cx}" y="{ty}" text-anchor="middle">{title}</text>'
        ).format(
            x1=PLOT_LEFT,
            x2=PLOT_RIGHT,
            y=PLOT_BOTTOM,
            t=TEXT,
            cx=(PLOT_LEFT + PLOT_RIGHT) // 2,
            ty=PLOT_BOTTOM + 2 * FONT + 12,
            title=_axis_title(series),
        )
    )
    # The legend, with each outcome's total.
    column = (PLOT_RIGHT - PLOT_LEFT) / LEGEND_COLUMNS
    totals = series.totals
    for k, outcome in enumerate(shown):
        lx = PLOT_LEFT + (k % LEGEND_COLUMNS) * column
        ly = LEGEND_TOP + (k // LEGEND_COLUMNS) * LEGEND_ROW - LEGEND_ROW / 2
        parts.append(
            Markup(
                '<g class="legend" data-outcome="{o}"><rect x="{x:.1f}" y="{y:.1f}" width="12" '
                'height="12" fill="{c}"/><text x="{tx:.1f}" y="{ty:.1f}">{label} ({n})</text></g>'
            ).format(
                o=outcome.value,
                x=lx,
                y=ly - 10,
                c=COLOURS[outcome],
                tx=lx + 17,
                ty=ly,
                label=_heading(outcome.label),
                n=totals[outcome],
            )
        )
    parts.append(Markup("</svg>"))
    return Chart(svg=Markup("").join(parts), table=_table(series, shown))


def _table(series: Series, shown: tuple[Outcome, ...]) -> Markup:
    """The chart's numbers as a table only screen readers reach (in a ``sr-only`` box: a
    table itself never shrinks to the 1px that class asks for)."""
    head = Markup("").join(
        Markup('<th scope="col">{}</th>').format(_heading(o.label)) for o in shown
    )
    rows = Markup("").join(
        Markup('<tr><th scope="row">{}</th>{}<td>{}</td></tr>').format(
            _when(series, b.start),
            Markup("").join(Markup("<td>{}</td>").format(b[o]) for o in shown),
            b.total,
        )
        for b in series.buckets
    )
    totals = series.totals
    foot = Markup("").join(Markup("<td>{}</td>").format(totals[o]) for o in shown)
    return Markup(
        '<div class="sr-only"><table><caption>Sign-ins, {title}</caption>'
        '<thead><tr><th scope="col">{axis}</th>{head}<th scope="col">Total</th></tr></thead>'
        '<tbody>{rows}</tbody><tfoot><tr><th scope="row">Total</th>{foot}<td>{all}</td></tr>'
        "</tfoot></table></div>"
    ).format(
        title=series.title.lower(),
        axis=_axis_title(series),
        head=head,
        rows=rows,
        foot=foot,
        all=sum(totals.values()),
    )


__all__ = ["COLOURS", "Chart", "nice_maximum", "sign_in_chart"]
