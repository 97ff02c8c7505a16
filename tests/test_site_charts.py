"""Site charts kept incrementally equal the fold from scratch; what they publish."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from spinewatch.baselines import load_catalog
from spinewatch.contracts import Indication, ProcedureType, parse_event
from spinewatch.contracts.drift import DriftInControl, DriftSignalled
from spinewatch.demo.synthetic.cohort import SiteProfile, encode, generate_cohort
from spinewatch.domain.drift.cusum import ChartState, new_chart, observe
from spinewatch.domain.drift.design import (
    MonitoredChart,
    chartable_strata,
    design_charts,
    design_for,
    monitorable_metrics,
)
from spinewatch.domain.drift.events import build, latest_only, pending, sentinel_message
from spinewatch.domain.drift.site_charts import (
    SENTINEL_CATEGORIES,
    CaseKey,
    ChartCase,
    PartitionCharts,
    SiteCharts,
)
from spinewatch.domain.drift.vas_chart import (
    VasChartState,
    new_vas_chart,
    observe_change,
    standardised,
)
from spinewatch.domain.drift.vas_drift import MonitoredVasChart, design_vas_charts
from spinewatch.domain.outcomes.facts import fact_of
from spinewatch.domain.outcomes.partition import (
    FactItem,
    PartitionState,
    apply_facts,
    rebuilt,
    settle,
)
from spinewatch.engine.settings import Settings
from spinewatch.errors import ChartDesignError

HEM, MET = ("pvp", "hemangioma"), ("pvp", "metastasis")
PVP_HEMANGIOMA = {(ProcedureType.PVP, Indication.HEMANGIOMA): 1.0}


def _charts(arl0: float = 300.0) -> tuple[MonitoredChart | MonitoredVasChart, ...]:
    # Small ARL0: the random streams below then signal often, which is the
    # interesting part of a fold (resets, change points).
    metrics = ("cement_leakage_rate_per_level", "complication_rate")
    catalog = load_catalog()
    return (
        *design_charts(catalog, metrics, (2.0, 0.5), arl0),
        *design_vas_charts(catalog, ("final",), 1.0, arl0),
    )


def _reference(
    chart: MonitoredChart | MonitoredVasChart, j: int, cases: dict[CaseKey, ChartCase]
) -> ChartState | VasChartState:
    """The definition: the chart's step functions over every case in clinical order."""
    if isinstance(chart, MonitoredVasChart):
        vas = new_vas_chart(chart.design.shift_sd, chart.design.limit)
        for key in sorted(cases):
            change, published = cases[key].outcomes[j], chart.strata.get(cases[key].stratum)
            if isinstance(change, float) and published is not None:
                z = standardised(change, published.mean_change, published.sd_change)
                vas = observe_change(vas, z)
        return vas
    state = new_chart(chart.design.odds_ratio, chart.design.limit)
    for key in sorted(cases):
        outcome, risk = cases[key].outcomes[j], chart.strata.get(cases[key].stratum)
        if isinstance(outcome, tuple) and risk is not None:
            state = observe(state, outcome[0], outcome[1], risk.p0)
    return state


def _reference_keys(
    chart: MonitoredChart | MonitoredVasChart, j: int, cases: dict[CaseKey, ChartCase]
) -> tuple[CaseKey | None, list[tuple[CaseKey, CaseKey]], CaseKey | None]:
    """The case keys a track names, by the definition: (where the statistic
    last left zero, (signal, change point) per signal, the chart's latest case)."""
    state: ChartState | VasChartState = chart.new_state()
    left_zero: CaseKey | None = None
    signals: list[tuple[CaseKey, CaseKey]] = []
    last: CaseKey | None = None
    for key in sorted(cases):
        outcome = cases[key].outcomes[j]
        if outcome is None:
            continue
        after = chart.step(state, outcome, cases[key].stratum)  # type: ignore[arg-type]
        if after is state:
            continue
        if state.statistic == 0.0:
            left_zero = key
        if len(after.signals) > len(state.signals):
            signals.append((key, left_zero or key))
        state, last = after, key
    return left_zero, signals, last


def _change(draw: st.DrawFn) -> float | None:
    # Points of VAS change; the published mean is -6.7, so 0 is far less relief.
    return None if draw(st.integers(0, 4)) == 0 else draw(st.floats(-9.0, 2.0))


def _outcome(draw: st.DrawFn, adverse: float) -> tuple[int, int] | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    trials = draw(st.integers(1, 3))
    return sum(draw(st.floats(0, 1)) < adverse for _ in range(trials)), trials


@st.composite
def _operations(draw: st.DrawFn) -> list[tuple[str, CaseKey, ChartCase | None]]:
    ops: list[tuple[str, CaseKey, ChartCase | None]] = []
    keys: list[CaseKey] = []
    latest: dict[CaseKey, ChartCase] = {}
    for _ in range(draw(st.integers(1, 120))):
        kind = draw(st.sampled_from(["new", "new", "new", "update", "touch", "remove", "refresh"]))
        if kind in ("update", "touch", "remove") and keys:
            key = draw(st.sampled_from(keys))
        else:
            key = (draw(st.integers(0, 50)), draw(st.binary(min_size=2, max_size=2)))
            keys.append(key)
        stratum = draw(st.sampled_from([HEM, MET, ("pkp", "other")]))
        adverse = draw(st.sampled_from([0.05, 0.5]))
        rates = (_outcome(draw, adverse), _outcome(draw, adverse), None, None)
        case = ChartCase(stratum, (*rates, _change(draw)))
        if kind == "touch" and key in latest:
            # One chart's outcome changes (a late follow-up): only that chart
            # may refold, and every other chart must keep its checkpoints.
            j = draw(st.sampled_from([0, 1, 4]))
            outcomes = list(latest[key].outcomes)
            outcomes[j] = case.outcomes[j]
            case = ChartCase(latest[key].stratum, tuple(outcomes))
        if kind == "remove":
            latest.pop(key, None)
        else:
            latest[key] = case
        ops.append((kind, key, None if kind == "remove" else case))
    return ops


@settings(max_examples=150, deadline=None)
@given(_operations(), st.integers(1, 5))
def test_incremental_refolds_equal_the_fold_from_scratch(
    ops: list[tuple[str, CaseKey, ChartCase | None]], every: int
) -> None:
    charts = _charts()
    site = SiteCharts(charts, checkpoint_every=every)
    cases: dict[CaseKey, ChartCase] = {}
    for kind, key, case in ops:
        if kind == "refresh":
            site.refresh()
        elif case is None:
            site.remove(key)
            cases.pop(key, None)
        else:
            site.put(key, case)
            cases[key] = case
    site.refresh()
    assert len(site) == len(cases)
    for j, chart in enumerate(charts):
        reference = _reference(chart, j, cases)
        assert site.tracks[j].state == reference
        assert [s.signal for s in site.tracks[j].signals] == list(reference.signals)
        left_zero, signals, last = _reference_keys(chart, j, cases)
        track = site.tracks[j]
        assert track.left_zero_at == left_zero
        assert [(s.at, s.change_at) for s in track.signals] == signals
        assert track.last_at == last


def _items(site: SiteProfile, seed: int) -> list[FactItem]:
    cohort = generate_cohort(seed, [site], duplicate_share=0, malformed=0, retractions=0)
    return [
        (e.procedure_id.bytes, fact_of(e)) for e in map(parse_event, map(encode, cohort.events))
    ]


def _drifting_site() -> tuple[tuple[MonitoredChart, ...], list[FactItem], PartitionCharts]:
    """Leakage odds doubled from procedure 250, folded at once as after a restart."""
    charts = design_charts(load_catalog(), ("cement_leakage_rate_per_level",), (2.0,), 10_000)
    site = SiteProfile("drifting", 700, PVP_HEMANGIOMA, leakage_odds_ratio=2.0, drift_after=250)
    items = _items(site, seed=5)
    whole = rebuilt([items])
    folded = PartitionCharts(charts)
    folded.track(whole.contributions, whole.contributions.keys())
    folded.refresh()
    return charts, items, folded


def test_a_changed_outcome_refolds_only_its_own_chart() -> None:
    """A late follow-up moves the VAS chart; the rate charts keep their folds."""
    charts = _charts()
    site = SiteCharts(charts, checkpoint_every=16)
    for n in range(200):
        site.put((n, b"p"), ChartCase(HEM, ((int(n % 7 == 0), 1), (0, 1), None, None, -6.0)))
    site.refresh()
    before = site.tracks
    site.put((3, b"p"), ChartCase(HEM, ((0, 1), (0, 1), None, None, 1.5)))  # VAS only
    assert site.refresh()
    assert [after is kept for after, kept in zip(site.tracks, before, strict=True)] == [
        True,
        True,
        True,
        True,
        False,
    ]


def test_partition_charts_follow_settled_records_in_any_order() -> None:
    charts, items, reference = _drifting_site()
    # Streamed: shuffled batches with redeliveries, settled and refolded at random points.
    rng = random.Random(3)
    stream = items + rng.sample(items, 100)
    rng.shuffle(stream)
    state, streamed = PartitionState(), PartitionCharts(charts)
    for start in range(0, len(stream), 53):
        apply_facts(state, stream[start : start + 53])
        if rng.random() < 0.5:
            streamed.track(state.contributions, settle(state))
        if rng.random() < 0.3:
            streamed.refresh()
    streamed.track(state.contributions, settle(state))
    streamed.refresh()
    assert streamed.sites["drifting"].tracks == reference.sites["drifting"].tracks
    track = reference.sites["drifting"].tracks[0]
    assert track.signals, "doubled leakage odds from procedure 250 on were not signalled"
    first = track.signals[0]
    # Cases are procedures here; none signalled before the shift began.
    assert first.signal.case_index >= 250 - 30
    assert first.signal.change_point <= first.signal.case_index


def test_messages_carry_the_signal_with_citations_and_stable_ids_but_no_identifiers() -> None:
    charts, items, partition = _drifting_site()
    state = rebuilt([items])
    site_charts = partition.sites["drifting"]
    items_now = list(pending("drifting", site_charts, resolve_after=100))
    signals = [i for i in items_now if not i.resolved]
    assert signals
    message = build(signals[0], site_charts)
    assert isinstance(message, DriftSignalled)
    again = PartitionCharts(charts)
    again.track(state.contributions, list(reversed(state.contributions)))
    again.refresh()
    ids = [i.message_id for i in pending("drifting", again.sites["drifting"], 100)]
    assert ids == [i.message_id for i in items_now]
    # The signal says what on-call staff need, from the catalog.
    assert message.metric == "cement_leakage_rate_per_level"
    assert message.unit == "treated_level"
    assert message.limit == charts[0].design.limit
    assert message.statistic >= message.limit
    assert message.observed_events is not None
    assert message.expected_events is not None
    assert message.observed_events > message.expected_events
    assert message.change_point_on <= message.signalled_on
    (baseline,) = message.baselines
    assert (baseline.baseline_id, baseline.seed[:3]) == ("s000.leakage.per_level", "000")
    # Cited as series, year and seed with the quoted words, not only by id.
    assert baseline.citation is not None
    assert baseline.citation.startswith("PVP for vertebral hemangioma, 26-patient series, ")
    assert "Pain Physician 2012 (seed 000)" in baseline.citation
    assert baseline.quote in baseline.citation
    assert baseline.cases == message.cases_since_change
    text = message.model_dump_json()
    assert DriftSignalled.model_validate_json(text) == message
    for procedure_id, _ in items:
        assert procedure_id.hex() not in text.replace("-", "")
    # Re-announcing after a rebuild: the last signal per chart (and its end).
    latest = latest_only(items_now)
    assert [i.message_id for i in latest if not i.resolved] == [signals[-1].message_id]


def test_a_chart_is_back_in_control_after_the_stated_number_of_quiet_cases() -> None:
    charts = _charts(arl0=100.0)
    site = SiteCharts(charts[:1])
    day = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1e6)
    for n in range(30):  # every level leaks: signals quickly
        site.put((day + n, bytes([n])), ChartCase(HEM, ((1, 1),)))
    site.refresh()
    track = site.tracks[0]
    assert track.signals
    assert not track.in_control(resolve_after=20)
    for n in range(30, 60):  # then 30 quiet levels
        site.put((day + n, bytes([n])), ChartCase(HEM, ((0, 1),)))
    site.refresh()
    track = site.tracks[0]
    assert track.cases_since_signal() == 30 + 29 - track.signals[-1].signal.case_index
    assert track.in_control(resolve_after=20)
    assert not track.in_control(resolve_after=track.cases_since_signal() + 1)  # type: ignore[operator]
    resolved = [i for i in pending("quiet-site", site, 20) if i.resolved]
    assert len(resolved) == 1
    message = build(resolved[0], site)
    assert isinstance(message, DriftInControl)
    assert message.cases_since_signal >= 20


def test_design_takes_the_largest_stratum_limit_and_skips_zero_baselines() -> None:
    catalog = load_catalog()
    (chart,) = design_charts(catalog, ("radiculopathy_rate",), (2.0,), 5_000)
    limits = [design_for(r.p0, 2.0, 5_000).limit for r in chart.strata.values()]
    assert chart.design.limit == max(limits) > min(limits)
    assert chart.design.arl0 >= 5_000
    # Seed 000 saw no pulmonary embolism: a sentinel, never a chart.
    embolism = monitorable_metrics()["pulmonary_cement_embolism_rate"]
    assert chartable_strata(catalog, embolism) == {}
    with pytest.raises(ChartDesignError, match="no chartable baseline"):
        design_charts(catalog, ("pulmonary_cement_embolism_rate",), (2.0,), 5_000)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("drift_metrics", ("cement_leakage_rate_per_level", "no_such_rate"), "not chartable"),
        ("drift_metrics", ("complication_rate", "complication_rate"), "each metric once"),
        ("drift_odds_ratios", (1.0,), "not be 1"),
        ("drift_odds_ratios", (), "at least 1"),
        ("drift_arl0_months", 0.5, "greater than or equal to 1"),
        ("drift_site_budgets", {"north": {"arl0_months": 0}}, "greater than or equal to 1"),
        ("drift_site_budgets", {"north": {"volume_per_month": -3}}, "greater than 0"),
        ("drift_site_budgets", {"north": {"arl0_month": 36}}, "Extra inputs"),
        ("drift_site_budgets", {"North Site": {"arl0_months": 36}}, "should match pattern"),
        ("drift_vas_timepoints", ("week_9",), "unknown timepoints"),
    ],
)
def test_drift_settings_are_validated_at_start_up(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as error:
        Settings(**{field: value})  # type: ignore[arg-type]
    assert field in str(error.value)


def test_the_vas_chart_signals_lost_relief_with_its_published_baselines() -> None:
    (chart,) = design_vas_charts(load_catalog(), ("post_procedure",), 1.0, 10_000)
    published = chart.strata[HEM]
    # Seed 000: 7.4 +- 1.6 before, 1.7 +- 0.6 after; the change's SD assumes r = 0.
    assert published.mean_change == pytest.approx(1.7 - 7.4)
    assert published.sd_change == pytest.approx(math.hypot(1.6, 0.6))
    assert (published.pre.entry_id, published.follow_up.entry_id) == (
        "s000.vas.pre",
        "s000.vas.post",
    )
    assert chart.design.arl0 >= 10_000
    site = SiteCharts((chart,))
    day = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1e6)
    for n in range(100):  # relief exactly as published: z = 0 never accumulates
        site.put((day + n, bytes([n])), ChartCase(HEM, (published.mean_change,)))
    site.put((day + 100, b"\xff"), ChartCase(MET, (0.0,)))  # no published VAS: not charted
    site.refresh()
    assert site.tracks[0].state.cases == 100
    assert site.tracks[0].state.statistic == 0.0
    # Then one SD less relief per patient: each adds z - k = 0.5, so the chart
    # crosses h after ceil(h / 0.5) patients, the change point being the first.
    worse = published.mean_change + published.sd_change
    for n in range(101, 160):
        site.put((day + n, n.to_bytes(2, "big")), ChartCase(HEM, (worse,)))
    site.refresh()
    first = site.tracks[0].signals[0]
    assert first.signal.case_index == 100 + math.ceil(chart.design.limit / 0.5) - 1
    assert first.change_at == (day + 101, (101).to_bytes(2, "big"))
    (item, *_) = pending("vas-site", site, resolve_after=100)
    message = build(item, site)
    assert isinstance(message, DriftSignalled)
    assert message.metric == "vas_change_post_procedure"
    assert message.shift_sd == 1.0
    assert message.odds_ratio is None
    assert message.observed_mean_change == pytest.approx(worse)
    assert message.expected_mean_change == pytest.approx(published.mean_change)
    assert [b.baseline_id for b in message.baselines] == ["s000.vas.post"]


def test_sentinel_events_are_found_once_per_procedure_and_again_after_a_rebuild() -> None:
    charts = design_charts(load_catalog(), ("cement_leakage_rate_per_level",), (2.0,), 10_000)
    site = SiteProfile("sentinel-site", 3000, PVP_HEMANGIOMA)
    items = _items(site, seed=8)
    state = rebuilt([items])
    first = PartitionCharts(charts)
    first.track(state.contributions, state.contributions.keys())
    found = first.take_sentinels()
    embolisms = {c.procedure_id for c in found if c.category == "pulmonary_cement_embolism"}
    assert embolisms, "3000 patients at the 1/500 floor gave no embolism"
    assert all(
        state.contributions[p].tally["patients_with_complication.pulmonary_cement_embolism"]
        for p in embolisms
    )
    # The same records again (a settle that changed nothing new): nothing new.
    first.track(state.contributions, state.contributions.keys())
    assert first.take_sentinels() == []
    # A rebuilt worker finds them all again, under the same message ids.
    again = PartitionCharts(charts)
    again.track(state.contributions, reversed(list(state.contributions)))
    ids = sorted(str(sentinel_message(c).sentinel_id) for c in again.take_sentinels())
    assert ids == sorted(str(sentinel_message(c).sentinel_id) for c in found)
    message = sentinel_message(found[0])
    assert found[0].procedure_id.hex() not in message.model_dump_json().replace("-", "")


def test_with_drift_monitoring_off_sites_still_grow_and_sentinels_are_found() -> None:
    # Settings document drift_metrics=() and drift_vas_timepoints=() as "off";
    # sites then hold no chart, and must still take cases past a checkpoint
    # block (a refresh used to index a checkpoint that was never written).
    site = SiteProfile("unmonitored", 3 * 256, PVP_HEMANGIOMA)
    items = _items(site, seed=8)
    state, partition = PartitionState(), PartitionCharts(())
    half = len(items) // 2
    for chunk in (items[:half], items[half:]):
        apply_facts(state, chunk)
        partition.track(state.contributions, settle(state))
        assert partition.refresh() == []
    assert len(partition.sites["unmonitored"]) == len(state.contributions) > 256
    assert partition.sites["unmonitored"].tracks == ()
    found = {(c.procedure_id, c.category) for c in partition.take_sentinels()}
    assert found == {
        (procedure_id, category)
        for procedure_id, c in state.contributions.items()
        for category in SENTINEL_CATEGORIES
        if c.tally.get(f"patients_with_complication.{category}")
    }
