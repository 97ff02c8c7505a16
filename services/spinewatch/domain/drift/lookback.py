"""The look-back list of a signal: the cases that drove it, from the chart's last restart.

Queensland's VLAD guidance asks the reviewer to "look back from the flag to
the patients". A signal's run starts where its chart last restarted: its
previous signal (the CUSUM resets there), an operator reset, or the chart's
first case. The list holds that run's cases in chart order, each with what
it added: the outcome, the stratum's expected value and the CUSUM after the
case, recomputed here with the chart's own step functions from zero (the
statistic after any restart), so it equals the fold's bit for bit; at the
signalling case, the value that crossed h (the chart then restarts at 0).

Pure: no I/O. The list names procedures by their pseudonymous ids, so it
goes to `{app}-lookback` only (`contracts/lookback.py`), never to the drift
topic, a log or a metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from uuid import UUID

from spinewatch.contracts.drift import Direction
from spinewatch.contracts.lookback import MAX_LOOKBACK_CASES, DriftLookback, LookbackCase
from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.domain.drift.chart_fold import AnyChart, AnyState, CaseKey, SignalAt, Track
from spinewatch.domain.drift.design import MonitoredChart, Outcome, Stratum
from spinewatch.domain.drift.events import clinical_date
from spinewatch.domain.drift.site_charts import SiteCharts


@dataclass(frozen=True, slots=True)
class RunStart:
    """Where a signal's run begins on its chart."""

    case_index: int  # 0-based index of the run's first case
    lower: CaseKey | None  # bound of the first case (None: the chart's first case)
    after: bool  # True: `lower` is the previous signal's case, excluded
    restarted_on: date | None  # the restart's clinical date (None: the chart's first case)


def run_start(track: Track, signal: SignalAt) -> RunStart:
    """The chart's last restart before `signal`: previous signal or operator reset."""
    index = signal.signal.case_index
    start = RunStart(0, None, after=False, restarted_on=None)
    previous = [s for s in track.signals if s.signal.case_index < index]
    if previous:
        last = previous[-1]
        start = RunStart(last.signal.case_index + 1, last.at, True, clinical_date(last.at))
    for restart in track.restarts:
        # A restart before the signal's case, at or after the previous one's
        # (a reset right after a signal restarts a chart already at zero).
        if start.case_index <= restart.case_index <= index and restart.first_at is not None:
            start = RunStart(
                restart.case_index,
                restart.first_at,
                after=False,
                restarted_on=clinical_date((restart.reset_at_us, b"")),
            )
    return start


def lookback(
    site_id: str, charts: SiteCharts, chart_index: int, signal: SignalAt, signal_id: UUID
) -> DriftLookback:
    """The look-back list of one signal of one of the site's charts."""
    chart = charts.charts[chart_index]
    track = charts.tracks[chart_index]
    start = run_start(track, signal)
    run = list(charts.charted(chart_index, start.lower, signal.at, after=start.after))
    expected_count = signal.signal.case_index - start.case_index + 1
    if len(run) != expected_count:
        # The track and the cases disagree: a defect, never a list to publish.
        raise ValueError(f"a signal's run has {len(run)} cases, its chart says {expected_count}")
    state: AnyState = chart.new_state()
    statistics = []
    for _, case, outcome in run:
        state = _step(chart, state, outcome, case.stratum)
        statistics.append(state.statistic)
    if state.signals:
        statistics[-1] = state.signals[-1].statistic  # crossed h here, then restarted at 0
    omitted = max(0, len(run) - MAX_LOOKBACK_CASES)
    kept = [
        _case(
            chart, key, case.stratum, outcome, (start.case_index + i, statistics[i]), signal=signal
        )
        for i, (key, case, outcome) in enumerate(run[omitted:], omitted)
    ]
    direction: Direction = chart.direction
    return DriftLookback(
        event_type="drift.lookback",
        schema_version=1,
        signal_id=signal_id,
        site_id=site_id,
        metric=chart.metric_name,
        direction=direction,
        restarted_on=start.restarted_on,
        omitted=omitted,
        cases=tuple(kept),
    )


def _step(chart: AnyChart, state: AnyState, outcome: Outcome, stratum: Stratum) -> AnyState:
    return chart.step(state, outcome, stratum)  # type: ignore[arg-type]


def _case(
    chart: AnyChart,
    key: CaseKey,
    stratum: Stratum,
    outcome: Outcome,
    at: tuple[int, float],
    *,
    signal: SignalAt,
) -> LookbackCase:
    """One case of the run: `at` is its 0-based index on the chart and the CUSUM after it."""
    index, statistic = at
    procedure, indication = stratum
    figures: dict[str, object]
    if isinstance(chart, MonitoredChart):
        events, _ = outcome  # type: ignore[misc]
        figures = {"adverse": events > 0, "expected": chart.strata[stratum].p0}
    else:
        figures = {"vas_change": outcome, "expected": chart.strata[stratum].mean_change}
    return LookbackCase(
        procedure_id=UUID(bytes=key[1]),
        performed_on=clinical_date(key),
        procedure_type=ProcedureType(procedure),
        indication=Indication(indication),
        case_number=index + 1,
        statistic=statistic,
        since_change_point=index >= signal.signal.change_point,
        **figures,
    )
