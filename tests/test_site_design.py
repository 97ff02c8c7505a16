"""Per-site chart designs: the mix's Markov chain, quantised inputs, margins, the cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from spinewatch.baselines import load_catalog
from spinewatch.domain.drift.arl import ChartDesign, calibrate
from spinewatch.domain.drift.budget import DEFAULT_ARL0_MONTHS
from spinewatch.domain.drift.chart_fold import CaseKey, ChartCase
from spinewatch.domain.drift.design import MonitoredChart, design_charts
from spinewatch.domain.drift.site_design import (
    ALGORITHM_VERSION,
    MONTH_US,
    SiteBudget,
    compute_design,
    measure_history,
    moved_beyond_margin,
    plan_site,
    plan_site_chart,
    quantise_shares,
    quantise_volume,
    rate_plan,
)
from spinewatch.engine.site_designs import DesignCache, SiteDesigner

HEM = ("pvp", "hemangioma")
MET = ("pvp", "metastasis")


@pytest.fixture(scope="module")
def complications() -> MonitoredChart:
    (chart,) = design_charts(load_catalog(), ["complication_rate"], (2.0,), 200)
    return chart


def _cases(per_month: list[dict[tuple[str, str], int]]) -> list[tuple[CaseKey, ChartCase]]:
    """Patients spread evenly over each month, one outcome (a complication chart)."""
    cases = []
    for month, counts in enumerate(per_month):
        strata = [s for s, n in sorted(counts.items()) for _ in range(n)]
        for i, stratum in enumerate(strata):
            at = int(month * MONTH_US + (i + 0.5) * MONTH_US / len(strata))
            cases.append(((at, f"{month}-{i}".encode()), ChartCase(stratum, ((0, 1),))))
    return cases


def test_a_sites_design_is_the_markov_chain_on_its_own_mix(complications: MonitoredChart) -> None:
    shares = ((HEM, 0.6), (MET, 0.4))
    plan = rate_plan(complications.strata, 2.0, 36.0, 45.0, shares)
    design = compute_design(plan.key)
    p0 = {s: complications.strata[s].p0 for s in (HEM, MET)}
    assert isinstance(design, ChartDesign)
    assert design == calibrate([(p0[HEM], 0.6), (p0[MET], 0.4)], 2.0, 36.0 * 45.0)
    # ...which differs from the largest single-stratum limit the worker used to take.
    alone = max(calibrate([(p, 1.0)], 2.0, 36.0 * 45.0).limit for p in p0.values())
    assert design.limit < alone
    assert design.arl0 >= 36.0 * 45.0


def test_inputs_are_quantised_so_designs_are_shared() -> None:
    assert [quantise_volume(v) for v in (83.4, 1234.0, 0.456, 9.96)] == [83, 1200, 0.46, 10]
    # Shares to 0.05; a stratum present at all keeps at least 0.05.
    assert quantise_shares({HEM: 61, MET: 39}) == ((HEM, 0.6), (MET, 0.4))
    assert quantise_shares({HEM: 199, MET: 1}) == ((HEM, 1.0), (MET, 0.05))
    # Two sites of nearly the same mix and volume: one key, one calibration.
    catalog = load_catalog()
    (chart,) = design_charts(catalog, ["complication_rate"], (2.0,), 200)
    one = plan_site_chart(chart, 0, _cases([{HEM: 31, MET: 20}] * 6), SiteBudget(60.0))
    two = plan_site_chart(chart, 0, _cases([{HEM: 30, MET: 21}] * 6), SiteBudget(60.0))
    assert one.key == two.key
    assert not one.provisional


def test_redesign_margins_volume_25_percent_share_010() -> None:
    mix = ((HEM, 0.6), (MET, 0.4))
    assert not moved_beyond_margin((40.0, mix), (49.0, mix), with_mix=True)
    assert moved_beyond_margin((40.0, mix), (51.0, mix), with_mix=True)
    assert moved_beyond_margin((40.0, mix), (29.0, mix), with_mix=True)
    assert not moved_beyond_margin((40.0, mix), (40.0, ((HEM, 0.65), (MET, 0.35))), with_mix=True)
    assert moved_beyond_margin((40.0, mix), (40.0, ((HEM, 0.7), (MET, 0.3))), with_mix=True)
    # A new stratum at 0.10 is a move; VAS charts have no mix to move.
    assert moved_beyond_margin(
        (40.0, ((HEM, 1.0),)), (40.0, ((HEM, 0.9), (MET, 0.1))), with_mix=True
    )
    assert not moved_beyond_margin((40.0, ((HEM, 1.0),)), (40.0, ()), with_mix=False)


def test_the_design_follows_monthly_checkpoints_with_hysteresis(
    complications: MonitoredChart,
) -> None:
    chart = complications
    # Two months: too little history, provisional (per stratum, default volume).
    early = plan_site_chart(chart, 0, _cases([{HEM: 40}] * 2), SiteBudget(60.0))
    assert early.provisional
    assert early.key.kind == "per_stratum"
    # Steady 40/month, then 46 (+15%): the design stays at 40.
    steady = measure_history(chart, 0, _cases([{HEM: 40}] * 6 + [{HEM: 46}] * 6 + [{HEM: 1}]))
    assert steady is not None
    assert steady.volume == 40
    # Then 80/month: the trailing 12 months pass +25% and it is redesigned.
    grown = measure_history(chart, 0, _cases([{HEM: 40}] * 6 + [{HEM: 80}] * 6 + [{HEM: 1}]))
    assert grown is not None
    assert grown.volume > 50
    # A mix that moves by 0.10 or more is redesigned even at the same volume.
    mixed = _cases([{HEM: 40}] * 12 + [{HEM: 20, MET: 20}] * 4 + [{HEM: 1}])
    moved = measure_history(chart, 0, mixed)
    assert moved is not None
    assert dict(moved.shares)[MET] >= 0.1


def test_a_site_override_fixes_volume_and_budget(complications: MonitoredChart) -> None:
    cases = _cases([{HEM: 30, MET: 10}] * 6)
    plan = plan_site_chart(complications, 0, cases, SiteBudget(24.0, procedures_per_month=12.0))
    assert (plan.volume_per_month, plan.arl0_months) == (12.0, 24.0)
    assert plan.key.target_arl0 == 24.0 * 12.0
    assert dict(plan.shares) == {HEM: 0.75, MET: 0.25}


def test_designs_are_cached_in_process_and_on_disk(
    tmp_path: Path, complications: MonitoredChart
) -> None:
    path = tmp_path / "drift-designs.json"
    plan = rate_plan(complications.strata, 2.0, DEFAULT_ARL0_MONTHS, 7.0, ((HEM, 0.5), (MET, 0.5)))
    first = SiteDesigner(60.0, cache=DesignCache(path), background=False)
    design = first.design(plan)
    assert first.calibrations == 1
    assert first.design(plan) == design
    assert first.calibrations == 1  # the second ask is a cache hit
    # A restarted worker reads it back and calibrates nothing.
    second = SiteDesigner(60.0, cache=DesignCache(path), background=False)
    assert second.design(plan) == design
    assert second.calibrations == 0
    # The file holds numbers only, under the algorithm's version.
    stored = json.loads(path.read_text())
    assert stored["version"] == ALGORITHM_VERSION
    assert list(stored["designs"]) == [plan.key.as_text()]
    # Another algorithm version's cache is ignored.
    path.write_text(json.dumps(stored | {"version": ALGORITHM_VERSION + 1}))
    assert DesignCache(path).get(plan.key) is None


def test_a_background_designer_answers_none_until_calibrated(
    complications: MonitoredChart,
) -> None:
    plan = rate_plan(complications.strata, 2.0, 48.0, 9.0, ((HEM, 0.35), (MET, 0.65)))
    designer = SiteDesigner(60.0)
    try:
        assert designer.design(plan) is None  # queued: the caller keeps its old design
        deadline = time.monotonic() + 120
        while (design := designer.design(plan)) is None:
            assert time.monotonic() < deadline, "calibration did not finish"
            time.sleep(0.05)
        assert design == compute_design(plan.key)
    finally:
        designer.close()


def test_the_one_pass_site_plan_equals_each_charts_own(complications: MonitoredChart) -> None:
    (leakage,) = design_charts(load_catalog(), ["cement_leakage_rate_per_level"], (2.0,), 200)
    charts = (complications, leakage)
    months = [{HEM: 30, MET: 10}] * 5 + [{HEM: 10, MET: 30}] * 8
    cases = [
        (key, ChartCase(case.stratum, ((0, 1), (1, 2) if i % 3 else None)))
        for i, (key, case) in enumerate(_cases(months))
    ]
    budget = SiteBudget(48.0)
    together = plan_site(charts, cases, budget)
    assert together == tuple(plan_site_chart(c, j, cases, budget) for j, c in enumerate(charts))
    assert [p.provisional for p in together] == [False, False]
