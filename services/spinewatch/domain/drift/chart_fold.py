"""The inner loop of a drift chart: one chart folded over a run of cases.

`cusum.observe_weighted` and `vas_chart.observe_change` define a chart's
step as a function from one immutable state to the next. That is the
definition the tests hold everything to, but a refold calls it once per
case per chart, and building a nine-field state per call was most of what
the drift charts cost the event loop on a replay (1.1 million steps for
50,000 procedures). The folds here carry the same fields in locals and
build a state only where one is kept (a checkpoint, a signal, the end),
with the arithmetic written in the same order as the step functions, so
the floats are the same bit for bit; a property test checks every fold
against the step functions from scratch.

Operator resets (`contracts/control.py`: a closed investigation restarts a
chart) are part of the definition: a reset at instant r restarts the CUSUM
at zero (`restarted`) just before the chart's first case performed after r,
and, when no such case is known yet, at the end of the fold, so the chart
shows the restart at once. Which resets are still to apply follows from the
state alone (those at or after the chart's latest case), so a refold from
any checkpoint needs nothing more than the sorted reset instants.

Pure: no I/O.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, replace

from spinewatch.domain.drift.cusum import ChartState, Signal
from spinewatch.domain.drift.design import MonitoredChart, Outcome, Stratum
from spinewatch.domain.drift.vas_chart import VasChartState, VasSignal
from spinewatch.domain.drift.vas_drift import MonitoredVasChart

CaseKey = tuple[int, bytes]  # (procedure time in epoch microseconds, procedure id)
Outcomes = tuple[Outcome | None, ...]  # per chart; None: not a case of that chart
AnyChart = MonitoredChart | MonitoredVasChart
AnyState = ChartState | VasChartState


@dataclass(frozen=True, slots=True)
class ChartCase:
    stratum: Stratum
    outcomes: Outcomes


@dataclass(frozen=True, slots=True)
class SignalAt:
    """A signal, with the cases where it fired and where the shift is estimated to start."""

    signal: Signal | VasSignal
    at: CaseKey
    change_at: CaseKey


@dataclass(frozen=True, slots=True)
class Restart:
    """An operator's reset applied: the CUSUM restarted at zero before case `case_index`."""

    case_index: int  # 0-based index of the chart's first case after the restart
    reset_at_us: int  # the reset's instant (the latest, when several fell between two cases)
    first_at: CaseKey | None  # the chart's first case after it; None: none known yet


@dataclass(frozen=True, slots=True)
class Track:
    """One chart's fold state, with the case keys the bare statistic cannot name."""

    state: AnyState
    left_zero_at: CaseKey | None = None
    signals: tuple[SignalAt, ...] = ()
    last_at: CaseKey | None = None  # the latest case of this chart
    restarts: tuple[Restart, ...] = ()  # operator resets, in chart order

    def restart_after(self, signal: SignalAt) -> Restart | None:
        """The first operator restart after this signal: it ended the signal's episode."""
        index = signal.signal.case_index
        return next((r for r in self.restarts if r.case_index > index), None)

    def cases_since_signal(self) -> int | None:
        if not self.signals:
            return None
        return self.state.cases - 1 - self.signals[-1].signal.case_index

    def in_control(self, resolve_after: int) -> bool:
        """The chart's state for alerting: out of control from a signal until
        `resolve_after` further cases pass without another one. (The CUSUM
        itself resets at the signal; a persisting shift signals again within
        about ARL1 cases, which keeps the episode open.) An operator reset
        after the last signal ends its episode at once."""
        since = self.cases_since_signal()
        if since is None or since >= resolve_after:
            return True
        return (
            bool(self.restarts)
            and self.restarts[-1].case_index > self.signals[-1].signal.case_index
        )


@dataclass(frozen=True, slots=True)
class Run:
    """The cases a refold covers: `keys[i]` and `cases[i]` sit at position `start + i`
    of the site; a checkpoint is appended to `marks` after every `every` positions."""

    keys: Sequence[CaseKey]
    cases: Sequence[ChartCase]
    start: int
    every: int


def restarted(state: AnyState) -> AnyState:
    """The chart restarted at zero by an operator, as after a signal: the count of
    cases, VLAD and the signals so far are kept; the change point starts anew."""
    if isinstance(state, ChartState):
        return ChartState(
            state.odds_ratio,
            state.limit,
            0.0,
            state.cases,
            state.cases,
            0,
            0.0,
            state.vlad,
            state.signals,
        )
    return VasChartState(state.reference, state.limit, 0.0, state.cases, state.cases, state.signals)


def pending_resets(resets: Sequence[int], last_at: CaseKey | None) -> Sequence[int]:
    """The sorted reset instants a fold from a track whose latest case is `last_at` has
    still to apply: every reset before that case was applied at or before it."""
    if last_at is None:
        return resets
    return resets[bisect_left(resets, last_at[0]) :]


def fold(
    chart: AnyChart,
    j: int,
    track: Track,
    run: Run,
    marks: list[Track],
    *,
    resets: Sequence[int] = (),
) -> Track:
    """Chart `j` of a site, from `track`, over the run, with the operator resets
    (sorted instants, epoch microseconds) of the chart."""
    state = track.state
    due = pending_resets(resets, track.last_at)
    if isinstance(chart, MonitoredChart) and isinstance(state, ChartState):
        folded = _fold_rate(chart, state, track, j, run=run, marks=marks, resets=due)
    elif isinstance(chart, MonitoredVasChart) and isinstance(state, VasChartState):
        folded = _fold_vas(chart, state, track, j, run=run, marks=marks, resets=due)
    else:
        raise TypeError(f"chart {chart.name} cannot continue a {type(state).__name__}")
    if due and (folded.last_at is None or due[-1] >= folded.last_at[0]):
        # A reset after the latest case: the chart restarts now (never kept in
        # a checkpoint, so a later case takes the restart over in the loop).
        restart = Restart(folded.state.cases, due[-1], None)
        return replace(folded, state=restarted(folded.state), restarts=(*folded.restarts, restart))
    return folded


def _fold_rate(
    chart: MonitoredChart,
    state: ChartState,
    track: Track,
    j: int,
    *,
    run: Run,
    marks: list[Track],
    resets: Sequence[int],
) -> Track:
    """`observe_weighted` over the run: the Bernoulli CUSUM with VLAD."""
    weights = chart.weights
    odds_ratio, limit = state.odds_ratio, state.limit
    statistic, cases, vlad, signals = state.statistic, state.cases, state.vlad, state.signals
    left_zero, events_since, expected_since = (
        state.left_zero_at,
        state.events_since_zero,
        state.expected_since_zero,
    )
    left_zero_key, keyed_signals, last_at = track.left_zero_at, track.signals, track.last_at
    restarts, due, next_reset = track.restarts, len(resets), 0

    def kept() -> Track:
        now = ChartState(
            odds_ratio,
            limit,
            statistic,
            cases,
            left_zero,
            events_since,
            expected_since,
            vlad,
            signals,
        )
        return Track(now, left_zero_key, keyed_signals, last_at, restarts)

    every = run.every
    for position, (key, case) in enumerate(zip(run.keys, run.cases, strict=True), run.start + 1):
        outcome = case.outcomes[j]
        weight_terms = weights.get(case.stratum) if type(outcome) is tuple else None
        if weight_terms is not None:
            if next_reset < due and resets[next_reset] < key[0]:
                # An operator reset fell before this case: restart at zero.
                while next_reset < due and resets[next_reset] < key[0]:
                    next_reset += 1
                statistic, left_zero, events_since, expected_since = 0.0, cases, 0, 0.0
                restarts = (*restarts, Restart(cases, resets[next_reset - 1], key))
            events, trials = outcome  # type: ignore[misc]
            log_ratio, penalty, p0 = weight_terms
            expected = trials * p0
            after = statistic + (events * log_ratio - trials * penalty)
            # max(after, 0.0) without a call per case per chart: the same value,
            # for -0.0 and NaN too (max keeps its first argument unless the
            # second is greater).
            if after < 0.0:  # noqa: PLR1730
                after = 0.0
            vlad = vlad + expected - events
            if statistic == 0.0:
                # The statistic leaves zero (or stays there) with this case.
                left_zero, events_since, expected_since = cases, events, expected
                left_zero_key = key
            else:
                events_since = events_since + events
                expected_since = expected_since + expected
            if after < limit:
                statistic = after
            else:
                signal = Signal(
                    case_index=cases,
                    statistic=after,
                    limit=limit,
                    change_point=left_zero,
                    cases_since_change=cases - left_zero + 1,
                    observed_events=events_since,
                    expected_events=expected_since,
                )
                signals = (*signals, signal)
                keyed_signals = (*keyed_signals, SignalAt(signal, key, left_zero_key or key))
                # Reset after a signal, as `observe_weighted` does.
                statistic, left_zero, events_since, expected_since = 0.0, cases + 1, 0, 0.0
            cases += 1
            last_at = key
        if position % every == 0:
            marks.append(kept())
    return kept()


def _fold_vas(
    chart: MonitoredVasChart,
    state: VasChartState,
    track: Track,
    j: int,
    *,
    run: Run,
    marks: list[Track],
    resets: Sequence[int],
) -> Track:
    """`observe_change` over the run: the upper CUSUM of standardised VAS change."""
    strata = chart.strata
    reference, limit = state.reference, state.limit
    statistic, cases, left_zero, signals = (
        state.statistic,
        state.cases,
        state.left_zero_at,
        state.signals,
    )
    left_zero_key, keyed_signals, last_at = track.left_zero_at, track.signals, track.last_at
    restarts, due, next_reset = track.restarts, len(resets), 0

    def kept() -> Track:
        now = VasChartState(reference, limit, statistic, cases, left_zero, signals)
        return Track(now, left_zero_key, keyed_signals, last_at, restarts)

    every = run.every
    for position, (key, case) in enumerate(zip(run.keys, run.cases, strict=True), run.start + 1):
        change = case.outcomes[j]
        published = strata.get(case.stratum) if isinstance(change, float) else None
        if published is not None:
            if next_reset < due and resets[next_reset] < key[0]:
                while next_reset < due and resets[next_reset] < key[0]:
                    next_reset += 1
                statistic, left_zero = 0.0, cases
                restarts = (*restarts, Restart(cases, resets[next_reset - 1], key))
            z = (change - published.mean_change) / published.sd_change  # type: ignore[operator]
            if statistic == 0.0:
                left_zero, left_zero_key = cases, key
            after = max(0.0, statistic + z - reference)
            if after < limit:
                statistic = after
            else:
                signal = VasSignal(cases, after, left_zero, cases - left_zero + 1)
                signals = (*signals, signal)
                keyed_signals = (*keyed_signals, SignalAt(signal, key, left_zero_key or key))
                statistic, left_zero = 0.0, cases + 1
            cases += 1
            last_at = key
        if position % every == 0:
            marks.append(kept())
    return kept()
