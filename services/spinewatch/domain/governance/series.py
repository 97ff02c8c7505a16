"""A drift chart case by case: the fold the worker keeps, unrolled into a series.

The worker holds only each chart's latest state (with checkpoints): a
plot needs every step. `chart_series` folds the site's cases in clinical
order with the chart's own step function (`MonitoredChart.step`,
`MonitoredVasChart.step`: the definition the worker's inlined fold is
tested against, bit for bit) and checks that the last state equals the
worker's track, so the plotted series ends exactly where the worker's
gauges stand. Positions and clinical dates only: no procedure id leaves.

Pure: no I/O.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from spinewatch.domain.drift.arl import ChartDesign
from spinewatch.domain.drift.chart_fold import AnyChart, AnyState, SignalAt, Track
from spinewatch.domain.drift.cusum import ChartState, Signal
from spinewatch.domain.drift.design import MonitoredChart
from spinewatch.domain.drift.site_charts import SiteCharts
from spinewatch.domain.drift.site_design import SiteChartPlan
from spinewatch.domain.drift.vas_chart import VasChartDesign
from spinewatch.domain.governance.model import ChartMark, ChartSeries, ChartSignal


class SeriesMismatch(AssertionError):
    """The unrolled fold does not end where the worker's chart stands (a defect)."""


def clinical_date(instant_us: int) -> date:
    return datetime.fromtimestamp(instant_us / 1e6, UTC).date()


def chart_series(
    site_id: str,
    site: SiteCharts,
    index: int,
    *,
    track: Track,
    in_control: bool,
    plan: SiteChartPlan | None,
) -> ChartSeries:
    """Chart `index` of the site, case by case, with its signals and design."""
    chart = site.charts[index]
    state: AnyState = chart.new_state()
    dates: list[date] = []
    statistic: list[float] = []
    vlad: list[float] = []
    rate = isinstance(chart, MonitoredChart)
    for key, case in site.cases():
        outcome = case.outcomes[index]
        if outcome is None:
            continue
        after = _step(chart, state, outcome, case.stratum)
        if after.cases == state.cases:
            continue  # not weighed (a stratum without a comparator): not on the chart
        state = after
        dates.append(clinical_date(key[0]))
        statistic.append(state.statistic)
        if isinstance(state, ChartState):
            vlad.append(state.vlad)
    if state != track.state:
        raise SeriesMismatch(f"{site_id} {chart.name}: the unrolled fold differs from the chart")
    design = chart.design
    return ChartSeries(
        site_id=site_id,
        metric=chart.metric_name,
        direction=chart.direction,
        kind="rate" if rate else "vas",
        limit=design.limit,
        dates=tuple(dates),
        statistic=tuple(statistic),
        vlad=tuple(vlad),
        signals=tuple(_signal(s, dates) for s in track.signals),
        in_control=in_control,
        arl0_cases=design.arl0,
        arl1_cases=design.arl1,
        volume_per_month=plan.volume_per_month if plan is not None else None,
        odds_ratio=design.odds_ratio if isinstance(design, ChartDesign) else None,
        shift_sd=design.shift_sd if isinstance(design, VasChartDesign) else None,
        provisional=plan.provisional if plan is not None else False,
    )


def _step(chart: AnyChart, state: AnyState, outcome: object, stratum: tuple[str, str]) -> AnyState:
    return chart.step(state, outcome, stratum)  # type: ignore[arg-type]


def _signal(found: SignalAt, dates: list[date]) -> ChartSignal:
    signal = found.signal
    at = signal.case_index
    change = signal.change_point
    observed = expected = None
    if isinstance(signal, Signal):
        observed, expected = float(signal.observed_events), signal.expected_events
    return ChartSignal(
        at=ChartMark(at, dates[at]),
        change_point=ChartMark(change, dates[min(change, at)]),
        statistic=signal.statistic,
        observed=observed,
        expected=expected,
    )
