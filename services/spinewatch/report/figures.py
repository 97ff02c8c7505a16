"""The report's figures: matplotlib drawn to inline SVG.

Why matplotlib (over plotly or vega-altair): it writes static vector SVG
with no JavaScript, so the report opens offline, prints to PDF as drawn,
and has nothing to run; with `svg.fonttype = "none"` its text stays text
(selectable, searchable, read by screen readers); it is the longest-kept
of the three and a wheel with no browser or Node.js at build time.

Colours are Okabe and Ito's palette (distinguishable with the common
colour-vision deficiencies), and nothing is told by colour alone: every
series has its own line style or marker shape and a legend, and flagged
points carry a text mark. Each drawn element a reader (or the browser
test) looks for has an id: `<figure>-site-<site>`, `<figure>-cusum`,
`<figure>-limit`, `<figure>-signal-<n>`, ...
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import date

import matplotlib

matplotlib.use("svg")  # no display, no GUI toolkit: vector output only

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from spinewatch.domain.governance.model import (
    LEGEND,
    ChartSeries,
    Flag,
    Funnel,
)
from spinewatch.domain.outcomes.funnel import funnel_limits

# Okabe & Ito (2008), "Color Universal Design".
BLACK, ORANGE, SKY, GREEN, BLUE, VERMILLION, PURPLE = (
    "#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7",
)  # fmt: skip

matplotlib.rcParams.update(
    {
        "svg.fonttype": "none",  # text as <text>, not glyph paths
        "svg.hashsalt": "spinewatch-report",  # the same figure, the same ids
        "font.family": "sans-serif",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)

_UNSAFE = re.compile(r"[^a-z0-9-]+")


def safe_id(text: str) -> str:
    return _UNSAFE.sub("-", text.lower()).strip("-")


def to_svg(figure: Figure) -> str:
    """The figure as an inline <svg> element: no XML prolog, no metadata block."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")  # fixed margins: "tight" draws twice
    plt.close(figure)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    return re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.DOTALL)


def _point_style(flags: Sequence[Flag]) -> tuple[str, str, str]:
    """(marker, colour, mark) of a funnel point: shape and text, never colour alone."""
    if Flag.ABOVE_FUNNEL_998 in flags:
        return "^", VERMILLION, LEGEND[Flag.ABOVE_FUNNEL_998][0]
    if Flag.ABOVE_FUNNEL_95 in flags:
        return "^", ORANGE, LEGEND[Flag.ABOVE_FUNNEL_95][0]
    if Flag.BELOW_FUNNEL_998 in flags:
        return "v", BLUE, LEGEND[Flag.BELOW_FUNNEL_998][0]
    if Flag.BELOW_FUNNEL_95 in flags:
        return "v", SKY, LEGEND[Flag.BELOW_FUNNEL_95][0]
    return "o", BLACK, ""


def funnel_svg(funnel: Funnel, figure_id: str) -> str:
    """Sites as points (rate against cases), the comparator p0, and the 95% / 99.8% limits."""
    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    figure.subplots_adjust(left=0.1, right=0.97, top=0.95, bottom=0.14)
    largest = max(s.denominator for s in funnel.sites)
    top = max(largest * 1.15, 20)
    # Denser where the funnel bends (small n): 48 exact limits draw it smoothly.
    grid = sorted({max(1, round(top * (i / 48) ** 2)) for i in range(1, 49)})
    limits = [funnel_limits(n, funnel.p0) for n in grid]
    axes.axhline(100 * funnel.p0, color=BLACK, linewidth=1.2, label=f"comparator {funnel.p0:.1%}")
    for k, (coverage, style, colour) in enumerate(((0.95, "--", ORANGE), (0.998, ":", VERMILLION))):
        lows = [100 * lim[k].low for lim in limits]
        highs = [100 * lim[k].high for lim in limits]
        label = f"{coverage:.1%} limits".replace(".0%", "%")
        axes.plot(grid, highs, style, color=colour, linewidth=1.2, label=label,
                  gid=f"{figure_id}-upper-{k}")  # fmt: skip
        axes.plot(grid, lows, style, color=colour, linewidth=1.2, gid=f"{figure_id}-lower-{k}")
    for site in funnel.sites:
        marker, colour, mark = _point_style(site.flags)
        axes.scatter([site.denominator], [100 * site.rate], marker=marker, s=46, color=colour,
                     edgecolors=BLACK, linewidths=0.6, zorder=3,
                     gid=f"{figure_id}-site-{safe_id(site.site_id)}")  # fmt: skip
        axes.annotate(f"{site.site_id} {mark}".strip(), (site.denominator, 100 * site.rate),
                      xytext=(5, 4), textcoords="offset points", fontsize=8)  # fmt: skip
    unit = "treated levels" if funnel.unit == "treated_level" else "patients"
    axes.set_xlabel(f"cases ({unit}) in the period")
    axes.set_ylabel("observed rate (%)")
    axes.set_xlim(0, top)
    axes.set_ylim(bottom=0)
    axes.legend(loc="upper right", fontsize=7, frameon=False)
    return to_svg(figure)


def chart_svg(series: ChartSeries, figure_id: str, start: date | None, end: date | None) -> str:
    """The CUSUM with its limit h (and, for rate charts, the VLAD) against clinical date."""
    rate = series.kind == "rate" and bool(series.vlad)
    rows = 2 if rate else 1
    figure, grid = plt.subplots(rows, 1, figsize=(6.4, 2.4 * rows), sharex=True, squeeze=False)
    figure.subplots_adjust(left=0.11, right=0.97, top=0.96, bottom=0.22 if rows == 1 else 0.15)
    cusum_axes = grid[0][0]
    dates = list(series.dates)
    cusum_axes.step(dates, series.statistic, where="post", color=BLUE, linewidth=1.1,
                    label="CUSUM statistic", gid=f"{figure_id}-cusum")  # fmt: skip
    cusum_axes.axhline(series.limit, color=VERMILLION, linestyle="--", linewidth=1.2,
                       label=f"limit h = {series.limit:.2f}", gid=f"{figure_id}-limit")  # fmt: skip
    for n, signal in enumerate(series.signals):
        cusum_axes.plot([signal.at.on], [signal.statistic], marker="^", markersize=8,
                        color=VERMILLION, markeredgecolor=BLACK, linestyle="none",
                        label="signal (then automatic reset to 0)" if n == 0 else None,
                        gid=f"{figure_id}-signal-{n}")  # fmt: skip
        cusum_axes.axvline(signal.change_point.on, color=PURPLE, linestyle=":", linewidth=1.0,
                           label="estimated change point" if n == 0 else None,
                           gid=f"{figure_id}-change-{n}")  # fmt: skip
    for n, reset in enumerate(series.operator_resets):
        cusum_axes.axvline(reset.on, color=GREEN, linestyle="-.", linewidth=1.2,
                           label="reset on closing an investigation" if n == 0 else None,
                           gid=f"{figure_id}-reset-{n}")  # fmt: skip
    what = "log-likelihood ratio" if series.kind == "rate" else "SD units"
    cusum_axes.set_ylabel(f"CUSUM ({what})")
    cusum_axes.set_ylim(bottom=0, top=max(series.limit * 1.25, max(series.statistic, default=0)))
    cusum_axes.legend(loc="upper left", fontsize=7, frameon=False, ncols=2)
    bottom = cusum_axes
    if rate:
        bottom = grid[1][0]
        vlad_label = "VLAD: expected \N{MINUS SIGN} observed"
        bottom.plot(dates, series.vlad, color=GREEN, linewidth=1.1, label=vlad_label,
                    gid=f"{figure_id}-vlad")  # fmt: skip
        bottom.axhline(0, color=BLACK, linewidth=0.6)
        for signal in series.signals:
            bottom.plot([signal.at.on], [series.vlad[signal.at.position]], marker="^",
                        markersize=7, color=VERMILLION, markeredgecolor=BLACK,
                        linestyle="none")  # fmt: skip
            bottom.axvline(signal.change_point.on, color=PURPLE, linestyle=":", linewidth=1.0)
        unit = "levels" if "per_level" in series.metric else "patients"
        bottom.set_ylabel(f"VLAD ({unit})")
        bottom.legend(loc="lower left", fontsize=7, frameon=False)
    if start is not None or end is not None:
        bottom.set_xlim(left=start, right=end)
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))  # type: ignore[no-untyped-call]
    bottom.set_xlabel("clinical date of the case (procedure date)")
    for label in bottom.get_xticklabels():
        label.set_rotation(20)
        label.set_horizontalalignment("right")
    return to_svg(figure)
