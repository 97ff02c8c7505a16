"""The report as one self-contained HTML page: inline CSS and SVG, no script, no link out.

Tables are text (selectable, copyable into minutes); every figure sits in a
<figure> with a caption giving its units; a comparator's quote is on hover
(`title`) and in the numbered notes at the end, so it survives printing.
Each cohort row carries `data-flags` (the flags' names) and its marks as
text, so neither a reader nor a test depends on colour.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from spinewatch.contracts.control import FINDINGS
from spinewatch.domain.governance.model import (
    LEGEND,
    AlertEpisode,
    ChartSeries,
    CohortRow,
    Completeness,
    Flag,
    Funnel,
    GovernanceReport,
)
from spinewatch.report.figures import chart_svg, funnel_svg, safe_id

DASH = "\N{EN DASH}"  # "no figure", and the join of a range

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:72rem;padding:0 1rem;color:#111;line-height:1.4}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:2px solid #0072B2}
h3{font-size:1.05rem;margin-top:1.6rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.82rem}
th,td{border:1px solid #bbb;padding:.25rem .4rem;text-align:left;vertical-align:top}
th{background:#eef3f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.flagged td{background:#fff3e0}tr.flagged td.marks{font-weight:bold}
.marks{white-space:nowrap}.muted{color:#555}
figure{margin:1rem 0;page-break-inside:avoid}figcaption{font-size:.85rem;color:#333;max-width:48rem}
figure svg{max-width:100%;height:auto}abbr{text-decoration:underline dotted}
.notes li{font-size:.8rem;margin:.2rem 0}
@media print{body{margin:0;max-width:none}h2{page-break-before:always}}
"""


def _pct(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{100 * value:.{digits}f}%"


def _p(value: float | None) -> str:
    if value is None:
        return DASH
    return "&lt;0.0001" if value < 1e-4 else f"{value:.4f}"


class _Notes:
    """Numbered notes: each quote once, referenced from every row citing it."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, text: str) -> int:
        if text not in self.items:
            self.items.append(text)
        return self.items.index(text) + 1


def render(report: GovernanceReport) -> str:
    notes = _Notes()
    parts = [
        _header(report),
        _legend(),
        _flagged(report.rows),
        _funnels(report.funnels),
        _charts(report),
        _rows(report.rows, notes),
        _completeness(report.completeness),
        _alerts(report.alerts),
        _notes(notes),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(report.title)}</title><style>{CSS}</style></head><body>"
        + "".join(parts)
        + "</body></html>\n"
    )


def _header(report: GovernanceReport) -> str:
    scope = report.scope
    period = f"{scope.start or 'first case'} to {scope.end or 'latest case'}"
    sites = ", ".join(scope.sites) if scope.sites else "every site"
    flagged = sum(1 for r in report.rows if r.flags)
    settings = "".join(
        f"<li>{escape(k)}: {escape(v)}</li>" for k, v in sorted(report.settings.items())
    )
    return (
        f"<header><h1>{escape(report.title)}</h1>"
        f"<p>Source: {escape(report.source)}.<br>Period (procedure dates): {period}; "
        f"sites: {escape(sites)}.<br>Generated {escape(report.generated_at)}; baseline catalog "
        f"{escape(report.catalog_version)}.</p>"
        f'<p id="summary">{len(report.rows)} cohort rows of monitored metrics, '
        f"<strong>{flagged} flagged</strong>; {len(report.charts)} drift charts, "
        f"{sum(1 for c in report.charts if not c.in_control)} signalling; "
        f"{len(report.alerts)} alerts in the period.</p>"
        f"<details><summary>Chart design settings</summary><ul>{settings}</ul></details></header>"
    )


def _legend() -> str:
    items = "".join(
        f'<tr data-flag="{flag.value}"><td class="marks">{escape(mark)}</td>'
        f"<td>{escape(flag.value)}</td><td>{escape(words)}</td></tr>"
        for flag, (mark, words) in LEGEND.items()
    )
    return (
        '<section id="legend"><h2>How to read this report</h2>'
        "<table><caption>Flags: the mark in the Flags column, and what it means</caption>"
        f"<tr><th>mark</th><th>flag</th><th>meaning</th></tr>{items}</table>"
        "<p><strong>approximate</strong>: no series of this exact cohort (procedure and "
        "indication) was published, so a broader published group stands in (e.g. a series "
        "pooling metastases and myeloma, or a mixed series); the group is named in the row. "
        "<strong>no comparator</strong>: the comparator policy found no point estimate to test "
        "against; its reason is given. Rates are observed proportions with 95% Wilson "
        "intervals; p is the exact one-sided binomial probability of at least the observed "
        "count at the comparator's rate. Funnel limits are exact binomial (Spiegelhalter 2005, "
        "interpolated) at the row's denominator, as the worker exports them.</p></section>"
    )


def _flagged(rows: tuple[CohortRow, ...]) -> str:
    """The flagged rows at a glance (each is in full, with its comparator, further down)."""
    body = "".join(
        f"<tr><td>{escape(r.site_id)}</td><td>{r.procedure} / {r.indication}</td>"
        f'<td>{escape(r.metric)}</td><td class="num">{r.numerator}/{r.denominator}</td>'
        f'<td class="num">{_pct(r.rate)} ({_pct(r.low)}{DASH}{_pct(r.high)})</td>'
        f'<td class="num">{_pct(r.comparator.p0) if r.comparator else DASH}</td>'
        f'<td class="marks">{_marks(r.flags)}</td></tr>'
        for r in rows
        if r.flags
    )
    if not body:
        return '<section id="flagged"><h2>Flagged rows</h2><p>No row is flagged.</p></section>'
    return (
        '<section id="flagged"><h2>Flagged rows</h2><table><tr><th>site</th><th>cohort</th>'
        "<th>metric</th><th>n/N</th><th>rate (95% CI)</th><th>comparator</th><th>flags</th>"
        f"</tr>{body}</table></section>"
    )


def _marks(flags: tuple[Flag, ...]) -> str:
    return " ".join(
        f'<abbr title="{escape(LEGEND[f][1])}">{escape(LEGEND[f][0])}</abbr>' for f in flags
    )


def _comparator(row: CohortRow, notes: _Notes) -> str:
    c = row.comparator
    if c is None:
        reason = row.note or "the catalog holds no figure for this cohort"
        return f'<span class="no-comparator">no comparator</span>: {escape(reason)}'
    ref = notes.ref(f'{c.label}, {c.locator}: "{c.quote}"')
    text = (
        f'<span title="{escape(c.quote)}">{escape(c.label)}</span>'
        f'<sup><a href="#note-{ref}">{ref}</a></sup>: {escape(c.described)}'
    )
    if not c.exact_cohort:
        text += f" <em>(approximate: broader group {escape(c.broader_group or '')})</em>"
    if c.p0 is None:
        text += " <em>(a range or rule: not tested against)</em>"
    return text


def _rows(rows: tuple[CohortRow, ...], notes: _Notes) -> str:
    head = (
        "<tr><th>cohort</th><th>metric</th><th>observed n/N</th><th>rate</th>"
        "<th>95% CI</th><th>comparator (cited)</th><th>published range</th><th>p</th>"
        "<th>funnel 95%</th><th>funnel 99.8%</th><th>flags</th></tr>"
    )
    out = ['<section id="cohorts"><h2>Sites and cohorts against their comparators</h2>']
    by_site: dict[str, list[CohortRow]] = {}
    for row in rows:
        by_site.setdefault(row.site_id, []).append(row)
    for site, members in by_site.items():
        body = []
        for row in members:
            limits = {f.coverage: f"{_pct(f.low)}{DASH}{_pct(f.high)}" for f in row.funnel}
            published = row.published_range
            range_text = DASH
            if published is not None:
                ref = notes.ref(f'{published.label}: "{published.quote}"')
                range_text = (
                    f'<span title="{escape(published.quote)}">{escape(published.described)}</span>'
                    f'<sup><a href="#note-{ref}">{ref}</a></sup>'
                )
            unit = "levels" if row.unit == "treated_level" else "patients"
            flags = " ".join(f.value for f in row.flags)
            # The figures a reader's tools (and the browser test) re-check, unrounded.
            p0 = row.comparator.p0 if row.comparator and row.comparator.p0 is not None else ""
            bounds = f"{published.low!r},{published.high!r}" if published is not None else ""
            body.append(
                f'<tr class="{"flagged" if row.flags else ""}" data-row="{escape(row.key)}" '
                f'data-flags="{flags}" data-numerator="{row.numerator}" '
                f'data-denominator="{row.denominator}" data-p0="{p0}" data-range="{bounds}">'
                f"<td>{row.procedure} / {row.indication}</td>"
                f"<td>{escape(row.metric)}</td>"
                f'<td class="num">{row.numerator}/{row.denominator} {unit}</td>'
                f'<td class="num">{_pct(row.rate)}</td>'
                f'<td class="num">{_pct(row.low)}{DASH}{_pct(row.high)}</td>'
                f"<td>{_comparator(row, notes)}</td><td>{range_text}</td>"
                f'<td class="num">{_p(row.p_value)}</td>'
                f'<td class="num">{limits.get(0.95, DASH)}</td>'
                f'<td class="num">{limits.get(0.998, DASH)}</td>'
                f'<td class="marks">{_marks(row.flags)}</td></tr>'
            )
        out.append(
            f'<h3 id="site-{safe_id(site)}">{escape(site)}</h3><table class="cohort-rows">'
            f"{head}{''.join(body)}</table>"
        )
    out.append("</section>")
    return "".join(out)


def _funnels(funnels: tuple[Funnel, ...]) -> str:
    out = ['<section id="funnels"><h2>Funnel plots: sites per monitored metric</h2>']
    for n, funnel in enumerate(funnels):
        figure_id = f"funnel-{n}"
        phi = funnel.overdispersion
        spread = (
            "fewer than two sites: no overdispersion estimate"
            if phi is None
            else "no excess spread between sites (φ = 1)"
            if phi <= 1.0
            else f"sites spread more than chance allows (φ = {phi:.2f}); the limits are "
            "not widened, as the worker's are not"
        )
        unit = "treated levels" if funnel.unit == "treated_level" else "patients"
        caption = (
            f"{funnel.metric}, {funnel.procedure} / {funnel.indication}: each site's observed "
            f"rate (%, y) against its number of {unit} (x); solid line the comparator "
            f"{_pct(funnel.p0)} ({escape(funnel.comparator.label)}), dashed the 95% and dotted "
            "the 99.8% exact binomial limits. Triangles up: above a limit; down: below; "
            f"circles: within. Overdispersion: {spread}."
        )
        out.append(
            f'<figure id="{figure_id}" class="funnel" data-sites="{len(funnel.sites)}">'
            f"{funnel_svg(funnel, figure_id)}<figcaption>Figure F{n + 1}. {caption}"
            "</figcaption></figure>"
        )
    if not funnels:
        out.append("<p>No monitored metric has a point comparator and data in the period.</p>")
    out.append("</section>")
    return "".join(out)


def _months(value: float | None) -> str:
    return DASH if value is None else f"{value:,.1f} months"


def _charts(report: GovernanceReport) -> str:
    out = ['<section id="charts"><h2>Drift charts per site: CUSUM and VLAD</h2>']
    start, end = report.scope.start, report.scope.end
    by_site: dict[str, list[ChartSeries]] = {}
    for chart in report.charts:
        by_site.setdefault(chart.site_id, []).append(chart)
    n = 0
    for site, charts in by_site.items():
        out.append(f"<h3>{escape(site)}</h3>")
        for chart in charts:
            n += 1
            figure_id = f"chart-{safe_id(site)}-{safe_id(chart.metric)}-{chart.direction}"
            out.append(_chart_figure(chart, figure_id, n, start, end))
    out.append("</section>")
    return "".join(out)


def _chart_figure(chart: ChartSeries, figure_id: str, n: int, start: Any, end: Any) -> str:
    shift = (
        f"odds x{chart.odds_ratio:g}" if chart.odds_ratio is not None else f"{chart.shift_sd:g} SD"
    )
    volume = (
        f"at {chart.volume_per_month:g} cases a month"
        + (" (provisional design)" if chart.provisional else "")
        if chart.volume_per_month
        else "(a fixed design, for no volume)"
    )
    state = "in control" if chart.in_control else "<strong>signalling</strong>"
    signals = "; ".join(
        f"case {s.at.position + 1} on {s.at.on} (change point case {s.change_point.position + 1}"
        f", {s.change_point.on}"
        + (f"; {s.observed:g} observed vs {s.expected:.1f} expected" if s.expected else "")
        + ")"
        for s in chart.signals
    )
    statistic = "log-likelihood ratio" if chart.kind == "rate" else "standardised VAS change, SD"
    vlad = (
        " Lower panel: VLAD, the cumulative expected minus observed adverse outcomes (in cases; "
        "rising: fewer than expected)."
        if chart.vlad
        else ""
    )
    caption = (
        f"{escape(chart.metric)} ({chart.direction}), {len(chart.statistic)} cases, {state}. "
        f"Upper panel: the risk-adjusted CUSUM ({statistic}) "
        f"against the procedure date, limit h = {chart.limit:.3f} (dashed). Designed for {shift} "
        f"{volume}: ARL0 {chart.arl0_cases:,.0f} cases ({_months(chart.arl0_months)}) to a "
        f"false alarm, ARL1 {chart.arl1_cases:,.0f} cases ({_months(chart.arl1_months)}) to "
        f"detect the shift.{vlad} Signals (triangles; the CUSUM restarts at 0 after each): "
        f"{signals or 'none'}. Dotted: estimated change points."
        + (
            f" Dash-dot: {len(chart.operator_resets)} reset(s) on closing an investigation."
            if chart.operator_resets
            else ""
        )
    )
    return (
        f'<figure id="{figure_id}" class="chart" data-site="{escape(chart.site_id)}" '
        f'data-metric="{escape(chart.metric)}" data-limit="{chart.limit:.6f}" '
        f'data-signals="{len(chart.signals)}">{chart_svg(chart, figure_id, start, end)}'
        f"<figcaption>Figure C{n}. {caption}</figcaption></figure>"
    )


def _completeness(rows: tuple[Completeness, ...]) -> str:
    body = "".join(
        f"<tr><td>{escape(c.site_id)}</td><td>{escape(c.timepoint)}</td>"
        f'<td class="num">{c.received}/{c.closed}</td><td class="num">{_pct(c.completeness)}</td>'
        f'<td class="num">{_pct(c.clarks_c)}</td>'
        + "".join(
            f'<td class="num">{c.counts.get(s, 0)}</td>'
            for s in ("due", "overdue", "lost", "censored")
        )
        + "</tr>"
        for c in rows
    )
    return (
        '<section id="completeness"><h2>Follow-up completeness</h2>'
        "<table><tr><th>site</th><th>timepoint</th><th>received/closed</th>"
        "<th>completeness</th><th>Clark's C</th><th>due</th><th>overdue</th><th>lost</th>"
        f"<th>censored (died)</th></tr>{body}</table>"
        '<p class="muted">Closed: the window and its grace have passed. Completeness = '
        "received (on time or late) / closed; Clark's C = observed / potential follow-up "
        "time. As of the end of the period or the site's clinical clock.</p></section>"
    )


def _minute(instant: str) -> str:
    """An RFC 3339 instant as a reader writes it: to the minute, in UTC."""
    try:
        moment = datetime.fromisoformat(instant.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return instant
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _alerts(alerts: tuple[AlertEpisode, ...]) -> str:
    body = "".join(
        f"<tr><td>{escape(a.site_id)}</td>"
        f"<td>{escape(a.metric)}{f' ({escape(a.direction)})' if a.direction else ''}</td>"
        f"<td>{escape(a.severity)}</td><td>{escape(_minute(a.first_at))}</td>"
        f"<td>{escape(a.status)}</td>"
        f"<td>{escape(a.investigation_status or DASH)}</td>"
        f"<td>{escape(FINDINGS.get(a.finding, a.finding) if a.finding else DASH)}</td>"
        f"<td>{escape(' → '.join(t[0] + (f' ({t[2]})' if t[2] else '') for t in a.transitions))}"
        "</td></tr>"
        for a in alerts
    )
    empty = "" if alerts else "<p>No alert in the period.</p>"
    return (
        '<section id="alerts"><h2>Alert history</h2>'
        "<table><tr><th>site</th><th>chart</th><th>severity</th><th>first transition</th>"
        "<th>latest transition</th><th>investigation</th><th>finding</th>"
        f"<th>transitions (by whom)</th></tr>{body}</table>{empty}"
        '<p class="muted">From the audit topic; findings are shown by category, never '
        "their free-text notes.</p></section>"
    )


def _notes(notes: _Notes) -> str:
    items = "".join(f'<li id="note-{n}">{escape(t)}</li>' for n, t in enumerate(notes.items, 1))
    return f'<section id="notes"><h2>Sources quoted</h2><ol class="notes">{items}</ol></section>'
