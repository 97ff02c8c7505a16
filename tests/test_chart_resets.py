"""Operator resets restart a chart exactly as its step functions restarted by hand would;
look-back lists name exactly the cases of a signal's run (pure: no broker)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from spinewatch.baselines import load_catalog
from spinewatch.contracts import Indication, ProcedureType, parse_event
from spinewatch.contracts.control import ChartReset
from spinewatch.contracts.drift import DriftInControl, DriftSignalled
from spinewatch.contracts.lookback import MAX_LOOKBACK_CASES, DriftLookback
from spinewatch.demo.synthetic.cohort import SiteProfile, encode, generate_cohort
from spinewatch.domain.drift.cusum import ChartState
from spinewatch.domain.drift.design import MonitoredChart, design_charts
from spinewatch.domain.drift.lookback import lookback
from spinewatch.domain.drift.site_charts import AnyChart, AnyState, CaseKey, ChartCase, SiteCharts
from spinewatch.domain.drift.vas_chart import VasChartState
from spinewatch.domain.outcomes.facts import fact_of
from spinewatch.domain.outcomes.partition import FactItem, rebuilt
from spinewatch.engine.drift_monitor import DriftMonitor
from tests.test_site_charts import HEM, _charts, _operations

LEAKAGE = "cement_leakage_rate_per_level"
HEMANGIOMA = {(ProcedureType.PVP, Indication.HEMANGIOMA): 1.0}

Op = tuple[str, CaseKey, ChartCase | None]


def _charted(chart: AnyChart, case: ChartCase, j: int) -> bool:
    outcome = case.outcomes[j]
    if isinstance(chart, MonitoredChart):
        return isinstance(outcome, tuple) and case.stratum in chart.strata
    return isinstance(outcome, float) and case.stratum in chart.strata


def _restarted_by_hand(state: AnyState) -> AnyState:
    """The definition of an operator restart: statistic 0, change point from the next case."""
    if isinstance(state, ChartState):
        return replace(
            state,
            statistic=0.0,
            left_zero_at=state.cases,
            events_since_zero=0,
            expected_since_zero=0.0,
        )
    assert isinstance(state, VasChartState)
    return replace(state, statistic=0.0, left_zero_at=state.cases)


def _reference(
    chart: AnyChart, j: int, cases: dict[CaseKey, ChartCase], resets: set[int]
) -> tuple[AnyState, list[int]]:
    """The chart's step functions over its cases, restarted before its first case after
    each reset (and at the end, for resets after every case): the state, and the case
    indexes where it restarted."""
    state: AnyState = chart.new_state()
    due, next_reset, restarts = sorted(resets), 0, []
    for key in sorted(cases):
        case = cases[key]
        if not _charted(chart, case, j):
            continue
        if next_reset < len(due) and due[next_reset] < key[0]:
            while next_reset < len(due) and due[next_reset] < key[0]:
                next_reset += 1
            state = _restarted_by_hand(state)
            restarts.append(state.cases)
        state = chart.step(state, case.outcomes[j], case.stratum)  # type: ignore[arg-type]
    if next_reset < len(due):
        state = _restarted_by_hand(state)
        restarts.append(state.cases)
    return state, restarts


@st.composite
def _with_resets(draw: st.DrawFn) -> list[tuple[str, object, object]]:
    ops: list[tuple[str, object, object]] = list(draw(_operations()))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(ops)))
        reset = ("reset", draw(st.integers(0, 4)), draw(st.integers(-1, 52)))
        ops.insert(at, reset)
        if draw(st.booleans()):  # the same reset again: a no-op
            ops.insert(draw(st.integers(at + 1, len(ops))), reset)
    return ops


@settings(max_examples=60, deadline=None)
@given(_with_resets(), st.integers(1, 5))
def test_a_fold_with_resets_equals_the_step_functions_restarted_by_hand(
    ops: list[tuple[str, object, object]], every: int
) -> None:
    charts = _charts()
    site = SiteCharts(charts, checkpoint_every=every)
    cases: dict[CaseKey, ChartCase] = {}
    resets: dict[int, set[int]] = {j: set() for j in range(len(charts))}
    for kind, key, case in ops:
        if kind == "reset":
            assert isinstance(key, int)
            assert isinstance(case, int)
            assert site.restart(key, case) == (case not in resets[key])
            resets[key].add(case)
        elif kind == "refresh":
            site.refresh()
        elif case is None:
            assert isinstance(key, tuple)
            site.remove(key)
            cases.pop(key, None)
        else:
            assert isinstance(key, tuple)
            assert isinstance(case, ChartCase)
            site.put(key, case)
            cases[key] = case
    site.refresh()
    for j, chart in enumerate(charts):
        state, restarts = _reference(chart, j, cases, resets[j])
        track = site.tracks[j]
        assert track.state == state
        assert [r.case_index for r in track.restarts] == restarts


def _case(n: int, leaks: bool) -> tuple[CaseKey, ChartCase]:
    return (_DAY + n * _HOUR, uuid.UUID(int=n + 1).bytes), ChartCase(HEM, ((int(leaks), 1),))


_DAY = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp()) * 1_000_000
_HOUR = 3_600_000_000


def _independent_lookbacks(
    chart: MonitoredChart, cases: list[tuple[CaseKey, ChartCase]], resets: list[int]
) -> list[list[tuple[uuid.UUID, date, int, float, bool]]]:
    """Per signal, the run from the chart's last restart, computed with nothing of the
    engine but the step function: (procedure id, date, case number, CUSUM after, since
    the change point)."""
    state: ChartState = chart.new_state()
    runs: list[list[tuple[uuid.UUID, date, int, float, bool]]] = []
    run: list[tuple[CaseKey, int, float]] = []
    due = sorted(resets)
    for key, case in cases:
        if due and due[0] < key[0]:
            while due and due[0] < key[0]:
                due.pop(0)
            restarted = _restarted_by_hand(state)
            assert isinstance(restarted, ChartState)
            state, run = restarted, []
        before = len(state.signals)
        state = chart.step(state, case.outcomes[0], case.stratum)  # type: ignore[arg-type]
        if len(state.signals) > before:
            signal = state.signals[-1]
            run.append((key, signal.case_index, signal.statistic))
            runs.append(
                [
                    (
                        uuid.UUID(bytes=k[1]),
                        (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=k[0])).date(),
                        index + 1,
                        statistic,
                        index >= signal.change_point,
                    )
                    for k, index, statistic in run
                ]
            )
            run = []
        else:
            run.append((key, state.cases - 1, state.statistic))
    return runs


def _drifting(
    resets: list[int],
) -> tuple[MonitoredChart, SiteCharts, list[tuple[CaseKey, ChartCase]]]:
    chart = _charts(arl0=100.0)[0]
    assert isinstance(chart, MonitoredChart)
    site = SiteCharts((chart,), checkpoint_every=7)
    # Every third level leaks, then every level: signals, restarted by resets.
    cases = [_case(n, leaks=n % 3 == 0 or n > 60) for n in range(140)]
    for key, case in cases:
        site.put(key, case)
    for instant in resets:
        site.restart(0, instant)
    site.refresh()
    return chart, site, cases


def test_look_back_lists_name_exactly_the_cases_of_each_signals_run() -> None:
    resets = [_DAY + 66 * _HOUR + 1, _DAY + 90 * _HOUR]  # mid-run, and on a case's instant
    chart, site, cases = _drifting(resets)
    track = site.tracks[0]
    assert len(track.signals) >= 3
    assert [r.case_index for r in track.restarts] == [67, 91]
    want = _independent_lookbacks(chart, cases, resets)
    assert len(want) == len(track.signals)
    for signal, expected in zip(track.signals, want, strict=True):
        listed = lookback("north", site, 0, signal, uuid.uuid4())
        got = [
            (c.procedure_id, c.performed_on, c.case_number, c.statistic, c.since_change_point)
            for c in listed.cases
        ]
        assert got == expected  # statistics bit for bit
        assert listed.omitted == 0
        assert listed.cases[-1].statistic >= chart.design.limit
        assert all(c.expected == chart.strata[HEM].p0 for c in listed.cases)
        assert DriftLookback.model_validate_json(listed.model_dump_json()) == listed
    # A run that began at a reset names its date; one after a signal, the signal's.
    after_reset = next(s for s in track.signals if s.signal.case_index > 67)
    first = lookback("north", site, 0, after_reset, uuid.uuid4())
    assert first.restarted_on == date(2026, 3, 4)  # 66 h after 2 March 00:00 UTC
    assert first.cases[0].case_number == 68


def test_a_long_run_keeps_its_newest_cases_and_counts_the_rest() -> None:
    chart = _charts(arl0=100.0)[0]
    site = SiteCharts((chart,))
    # Quiet for long enough, then every level leaks.
    n_cases = MAX_LOOKBACK_CASES + 300
    for n in range(n_cases):
        key, case = _case(n, leaks=n >= n_cases - 12)
        site.put(key, case)
    site.refresh()
    (signal, *_) = site.tracks[0].signals
    listed = lookback("north", site, 0, signal, uuid.uuid4())
    assert listed.omitted + len(listed.cases) == signal.signal.case_index + 1
    assert len(listed.cases) == MAX_LOOKBACK_CASES
    assert listed.cases[-1].case_number == signal.signal.case_index + 1
    # About 260 bytes a case: well under a producer's 1 MiB request limit.
    assert len(listed.model_dump_json()) < 300 * MAX_LOOKBACK_CASES < 1 << 20


def _reset(site: str, chart: AnyChart, after_us: int, reset_id: uuid.UUID) -> ChartReset:
    return ChartReset(
        event_type="chart.reset",
        schema_version=1,
        reset_id=reset_id,
        site_id=site,
        metric=chart.metric_name,
        direction=chart.direction,
        effective_after=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=after_us),
        fingerprint="f" * 16,
        finding="no_issue_found",
        requested_by="quality.lead",
        requested_at=datetime(2026, 6, 1, tzinfo=UTC),
    )


def _items(n: int, seed: int, start: datetime) -> list[FactItem]:
    cohort = generate_cohort(
        seed,
        [SiteProfile("north", n, HEMANGIOMA, leakage_odds_ratio=3.0)],
        start=start,
        duplicate_share=0,
        malformed=0,
        retractions=0,
    )
    parsed = [parse_event(encode(e)) for e in cohort.events]
    return [(e.procedure_id.bytes, fact_of(e)) for e in parsed]


def _monitor() -> tuple[DriftMonitor, MonitoredChart]:
    chart = design_charts(load_catalog(), (LEAKAGE,), (2.0,), 300)[0]
    return DriftMonitor((chart,), resolve_after_cases=100), chart


def _latest_case_us(monitor: DriftMonitor) -> int:
    last = monitor.partitions[0].sites["north"].tracks[0].last_at
    assert last is not None
    return last[0]


def test_a_reset_ends_the_episode_once_and_survives_a_rebuild() -> None:
    monitor, chart = _monitor()
    first_year = _items(300, 3, datetime(2025, 1, 1, tzinfo=UTC))
    state = rebuilt([first_year])
    monitor.track(0, state, state.contributions.keys())
    monitor.refresh([0])
    first = monitor.take_outbox()
    signals = [m for _, m in first if isinstance(m, DriftSignalled)]
    lists = monitor.take_lookbacks()
    assert signals, "tripled leakage odds were not signalled"
    assert [m.signal_id for _, m in lists] == [s.signal_id for s in signals]
    site = monitor.partitions[0].sites["north"]
    assert not site.tracks[0].in_control(100)

    last_us = _latest_case_us(monitor)
    reset = _reset("north", chart, last_us, uuid.uuid4())
    assert monitor.apply_reset(reset) == "applied"
    monitor.refresh([0])
    (ended,) = [m for _, m in monitor.take_outbox()]
    assert isinstance(ended, DriftInControl)
    assert ended.signal_id == signals[-1].signal_id
    assert ended.in_control_on == reset.effective_after.date()
    assert site.tracks[0].state.statistic == 0.0
    assert site.tracks[0].in_control(100)
    # The same reset again, by id or under another id at the same instant: nothing.
    assert monitor.apply_reset(reset) == "duplicate"
    again = reset.model_copy(update={"reset_id": uuid.uuid4()})
    assert monitor.apply_reset(again) == "applied"
    monitor.refresh([0])
    assert monitor.take_outbox() == []
    unknown = reset.model_copy(update={"reset_id": uuid.uuid4(), "metric": "no_such_chart"})
    assert monitor.apply_reset(unknown) == "unknown_chart"
    # A site not owned keeps its reset for when a rebalance brings it.
    assert monitor.apply_reset(_reset("south", chart, last_us, uuid.uuid4())) == "applied"
    assert monitor.resets_of("south", 0) == 1

    # Rebuilt in this process (a rebalance): nothing new to announce.
    monitor.rebuild({0: state})
    monitor.refresh([0])
    assert not [m for _, m in monitor.take_outbox() if isinstance(m, DriftSignalled)]
    # A restarted worker: gated until the resets are read; then the reset
    # applies again and the ended episode's signal is not announced again,
    # only its return to control (the same id).
    restarted, _ = _monitor()
    restarted.ready = False
    restarted.rebuild({0: state})
    restarted.refresh([0])
    assert restarted.take_outbox() == []
    assert restarted.apply_reset(reset) == "applied"
    restarted.ready = True
    restarted.refresh([0])
    announced = [
        m for _, m in restarted.take_outbox() if isinstance(m, DriftSignalled | DriftInControl)
    ]
    assert [(type(m), m.signal_id) for m in announced] == [(DriftInControl, ended.signal_id)]
    assert restarted.take_lookbacks() == []
    assert restarted.partitions[0].sites["north"].tracks[0].state.statistic == 0.0


def test_cases_after_a_reset_restart_from_zero_and_signal_again_with_their_own_run() -> None:
    monitor, chart = _monitor()
    first_year = _items(300, 3, datetime(2025, 1, 1, tzinfo=UTC))
    state = rebuilt([first_year])
    monitor.track(0, state, state.contributions.keys())
    monitor.refresh([0])
    monitor.take_outbox()
    monitor.take_lookbacks()
    last_us = _latest_case_us(monitor)
    monitor.apply_reset(_reset("north", chart, last_us, uuid.uuid4()))
    monitor.refresh([0])
    cases_before = monitor.partitions[0].sites["north"].tracks[0].state.cases
    # A second year, still drifting: the chart signals again from zero.
    both = rebuilt([first_year, _items(300, 4, datetime(2026, 1, 1, tzinfo=UTC))])
    monitor.track(0, both, both.contributions.keys())
    monitor.refresh([0])
    new_signals = [m for _, m in monitor.take_outbox() if isinstance(m, DriftSignalled)]
    assert new_signals
    listed = monitor.take_lookbacks()[0][1]
    assert listed.signal_id == new_signals[0].signal_id
    assert listed.cases[0].case_number == cases_before + 1  # the first case after the reset
    reset_date = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=last_us)).date()
    assert listed.restarted_on == reset_date
