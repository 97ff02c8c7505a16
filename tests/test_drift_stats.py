"""The drift statistics core: CUSUM, VLAD, Markov-chain run lengths, funnel limits.

Pure functions, no I/O. Monte-Carlo checks are seeded, so every run of the
suite sees the same numbers; tolerances are the simulations' own standard
errors or exact binomial intervals, not tuned constants.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats

from spinewatch.baselines import load_catalog
from spinewatch.domain.drift.arl import (
    calibrate,
    run_lengths,
    signal_probability,
    simulate_run_lengths,
)
from spinewatch.domain.drift.cusum import ChartState, llr_weight, new_chart, observe
from spinewatch.domain.drift.vas_chart import (
    calibrate_vas,
    new_vas_chart,
    observe_change,
    simulate_vas_run_lengths,
    standardised,
    vas_arl,
)
from spinewatch.domain.outcomes.funnel import (
    binomial_limit,
    exceedance_p_value,
    funnel_limits,
    overdispersion_factor,
)
from spinewatch.errors import ChartDesignError

LN2, LN11 = math.log(2.0), math.log(1.1)


def _binomial_interval(share: float, runs: int, confidence: float = 0.999) -> tuple[float, float]:
    """Where the observed count of `runs` Bernoulli(share) trials falls, as shares."""
    low, high = stats.binom.interval(confidence, runs, share)
    return low / runs, high / runs


def test_llr_weights_by_hand() -> None:
    # p = 0.1, R = 2: 1 - p + R p = 1.1
    assert llr_weight(1, 1, 0.1, 2.0) == pytest.approx(LN2 - LN11)
    assert llr_weight(0, 1, 0.1, 2.0) == pytest.approx(-LN11)
    # A procedure with 3 treated levels, one leaking: one step, three trials.
    assert llr_weight(1, 3, 0.1, 2.0) == pytest.approx(LN2 - 3 * LN11)
    # The lower chart (R = 0.5) gains on good outcomes.
    assert llr_weight(0, 1, 0.1, 0.5) == pytest.approx(-math.log(0.95))
    assert llr_weight(0, 1, 0.1, 0.5) > 0
    with pytest.raises(ChartDesignError):
        llr_weight(1, 1, 0.0, 2.0)
    with pytest.raises(ChartDesignError):
        llr_weight(2, 1, 0.1, 2.0)


def _run(state: ChartState, outcomes: list[int], p: float) -> ChartState:
    for y in outcomes:
        state = observe(state, y, 1, p)
    return state


def test_cusum_recursion_signal_change_point_and_reset_by_hand() -> None:
    state = _run(new_chart(2.0, limit=1.0), [1, 0, 0], 0.1)
    assert state.statistic == pytest.approx((LN2 - LN11) - 2 * LN11)
    state = observe(state, 1, 1, 0.1)  # 2 (ln2 - ln1.1) - 2 ln1.1 = 1.0051 >= 1.0
    (signal,) = state.signals
    assert signal.case_index == 3
    assert signal.statistic == pytest.approx(2 * LN2 - 4 * LN11)
    assert (signal.change_point, signal.cases_since_change) == (0, 4)
    assert signal.observed_events == 2
    assert signal.expected_events == pytest.approx(0.4)
    assert state.signalling  # the reset is recorded ...
    assert state.statistic == 0.0  # ... and the chart starts again from zero
    state = observe(state, 1, 1, 0.1)
    assert not state.signalling
    assert state.statistic == pytest.approx(LN2 - LN11)
    assert state.vlad == pytest.approx(5 * 0.1 - 3)  # expected minus observed


def test_change_point_is_the_last_time_the_statistic_left_zero() -> None:
    # One early event decays back to zero after 7 good cases (0.598 - 7 * 0.095 < 0).
    state = _run(new_chart(2.0, limit=1.5), [1, 0, 0, 0, 0, 0, 0, 0], 0.1)
    assert state.statistic == 0.0
    state = _run(state, [1, 1, 1], 0.1)
    (signal,) = state.signals
    assert signal.change_point == 8  # not 0: the early event was forgiven
    assert signal.cases_since_change == 3


@pytest.mark.parametrize(
    ("case_mix", "odds_ratio", "limit"),
    [
        ([(3 / 28, 1.0)], 2.0, 3.0),  # seed 000 leakage per level
        ([(0.025, 1.0)], 2.0, 2.5),  # seed 001 complications, PVP for hemangioma
        ([(0.025, 0.6), (0.10, 0.4)], 2.0, 3.0),  # a mixed hemangioma/metastasis site
        ([(0.30, 1.0)], 0.5, 3.0),  # the lower chart: improvement
    ],
)
def test_markov_chain_arl_matches_monte_carlo(
    case_mix: list[tuple[float, float]], odds_ratio: float, limit: float
) -> None:
    arl0, arl1 = run_lengths(case_mix, odds_ratio, limit)
    for true_odds, exact in ((1.0, arl0), (odds_ratio, arl1)):
        simulated = simulate_run_lengths(
            case_mix, odds_ratio, limit, true_odds_ratio=true_odds, runs=3000, seed=7
        )
        standard_error = simulated.std(ddof=1) / math.sqrt(len(simulated))
        assert abs(exact - simulated.mean()) < 3.5 * standard_error, (exact, simulated.mean())
    assert arl1 < arl0


@pytest.mark.parametrize(
    ("p0", "odds_ratio", "target"),
    [(3 / 28, 2.0, 1000.0), (0.025, 2.0, 2000.0), (0.10, 1.5, 500.0), (0.30, 0.5, 800.0)],
)
def test_calibrated_limit_is_the_smallest_reaching_the_target(
    p0: float, odds_ratio: float, target: float
) -> None:
    design = calibrate([(p0, 1.0)], odds_ratio, target)
    assert target <= design.arl0 < 1.05 * target
    below, _ = run_lengths([(p0, 1.0)], odds_ratio, design.limit - design.lattice_step)
    assert below < target
    assert design.arl1 < design.arl0


def _stream(rng: random.Random, risks: list[float], odds_ratio: float = 1.0) -> list[int]:
    def shifted(p: float) -> float:
        return odds_ratio * p / (1 - p + odds_ratio * p)

    return [int(rng.random() < shifted(p)) for p in risks]


def test_a_case_mix_shift_alone_does_not_signal_when_risk_adjusted() -> None:
    low, high = 0.025, 0.10  # seed 001 PVP-hemangioma vs seed 003 metastasis complications
    design = calibrate([(low, 1.0)], 2.0, 2000.0)
    runs, cases = 300, 400
    rng = random.Random(20261121)
    adjusted_alarms = naive_alarms = 0
    for _ in range(runs):
        # The site starts treating metastases: half its cases, at their own baseline.
        risks = [low if i < 100 or rng.random() < 0.5 else high for i in range(cases)]
        outcomes = _stream(rng, risks)
        adjusted, naive = new_chart(2.0, design.limit), new_chart(2.0, design.limit)
        for y, p in zip(outcomes, risks, strict=True):
            adjusted = observe(adjusted, y, 1, p)
            naive = observe(naive, y, 1, low)  # ignores the case mix
        adjusted_alarms += bool(adjusted.signals)
        naive_alarms += bool(naive.signals)
    mix = [(low, 100 + 150), (high, 150)]  # the stream's overall mix, approximately
    expected = signal_probability(mix, 2.0, design.limit, cases)
    low_share, high_share = _binomial_interval(expected, runs)
    assert low_share <= adjusted_alarms / runs <= high_share
    assert naive_alarms / runs > 0.8  # what an unadjusted chart would do to this site


def _s000_leakage_per_level() -> float:
    entry = next(e for e in load_catalog().baselines if e.id == "s000.leakage.per_level")
    p0 = entry.statistic.value  # type: ignore[union-attr]
    assert p0 == pytest.approx(3 / 28)
    return float(p0)


def test_doubled_leakage_odds_are_signalled_and_stable_streams_alarm_at_the_arl0_rate() -> None:
    p0 = _s000_leakage_per_level()
    design = calibrate([(p0, 1.0)], 2.0, 1000.0)
    runs, before, after = 300, 200, 600
    rng = random.Random(2026)
    detected, early_alarms, delays = 0, 0, []
    stable_alarms = 0
    for _ in range(runs):
        outcomes = _stream(rng, [p0] * before) + _stream(rng, [p0] * after, odds_ratio=2.0)
        chart = _run(new_chart(2.0, design.limit), outcomes, p0)
        first = chart.signals[0].case_index if chart.signals else None
        if first is not None and first < before:
            early_alarms += 1
        later = [s for s in chart.signals if s.case_index >= before]
        if later:
            detected += 1
            delays.append(later[0].case_index - before + 1)
        stable = _run(new_chart(2.0, design.limit), _stream(rng, [p0] * (before + after)), p0)
        stable_alarms += bool(stable.signals)
    assert detected / runs > 0.95
    assert np.median(delays) < 2 * design.arl1
    for alarms, cases in ((early_alarms, before), (stable_alarms, before + after)):
        expected = signal_probability([(p0, 1.0)], 2.0, design.limit, cases)
        low_share, high_share = _binomial_interval(expected, runs)
        assert low_share <= alarms / runs <= high_share, (alarms, expected)


def test_exact_binomial_p_value_by_hand() -> None:
    # P(X >= 3), X ~ Bin(10, 0.1) = 1 - (0.9^10 + 10 * 0.1 * 0.9^9 + 45 * 0.01 * 0.9^8)
    by_hand = 1 - (0.9**10 + 10 * 0.1 * 0.9**9 + 45 * 0.01 * 0.9**8)
    assert exceedance_p_value(3, 10, 0.1) == pytest.approx(by_hand)
    assert exceedance_p_value(0, 10, 0.1) == pytest.approx(1.0)


def test_funnel_limits_interpolate_and_narrow_with_volume() -> None:
    p0 = 0.025
    limits = {n: funnel_limits(n, p0) for n in (20, 50, 200, 1000, 20000)}
    for n, (inner, outer) in limits.items():
        assert outer.low <= inner.low <= p0 <= inner.high <= outer.high, n
    highs = [limits[n][1].high for n in sorted(limits)]
    assert highs == sorted(highs, reverse=True)
    # Interpolation: between the integer quantiles r - 1 and r, not on them.
    n = 200
    upper = binomial_limit(n, p0, 0.975)
    r = stats.binom.ppf(0.975, n, p0)
    assert (r - 1) / n < upper < r / n
    # At large volume the exact limits meet the normal approximation.
    big = 20000
    half = stats.norm.ppf(0.975) * math.sqrt(p0 * (1 - p0) / big)
    assert limits[big][0].high == pytest.approx(p0 + half, abs=2e-4)


def test_overdispersion_is_one_for_chance_spread_and_widens_real_spread() -> None:
    rng = np.random.default_rng(3)
    trials = [400] * 30
    chance = [int(rng.binomial(400, 0.1)) for _ in trials]
    assert overdispersion_factor(chance, trials, 0.1) == 1.0
    spread = [int(rng.binomial(400, p)) for p in rng.uniform(0.03, 0.25, size=30)]
    phi = overdispersion_factor(spread, trials, 0.1)
    assert phi > 2
    exact = funnel_limits(400, 0.1)[0]
    widened = funnel_limits(400, 0.1, overdispersion=phi)[0]
    assert widened.high - widened.low > exact.high - exact.low


def test_vas_cusum_arl_matches_published_values_and_monte_carlo() -> None:
    # Montgomery, Introduction to Statistical Quality Control, table 9.3:
    # k = 0.5, h = 4: ARL0 = 336, ARL at a 1-SD shift = 8.38.
    assert vas_arl(0.5, 4.0) == pytest.approx(336, abs=1)
    assert vas_arl(0.5, 4.0, mean_shift=1.0) == pytest.approx(8.38, abs=0.02)
    for reference, limit, shift in ((0.25, 6.0, 0.0), (0.5, 5.0, 0.5)):
        exact = vas_arl(reference, limit, mean_shift=shift)
        simulated = simulate_vas_run_lengths(reference, limit, mean_shift=shift, runs=3000, seed=11)
        standard_error = simulated.std(ddof=1) / math.sqrt(len(simulated))
        assert abs(exact - simulated.mean()) < 3.5 * standard_error


def test_vas_chart_calibration_and_change_point() -> None:
    design = calibrate_vas(1.0, 500.0)
    assert 500 <= design.arl0 < 1.05 * 500
    assert design.arl1 < 15
    # Less relief than published: z drifts up by 1 SD after patient 30.
    rng = random.Random(5)
    state = new_vas_chart(1.0, design.limit)
    for i in range(120):
        state = observe_change(state, rng.gauss(1.0 if i >= 30 else 0.0, 1.0))
    first = next(s for s in state.signals if s.case_index >= 30)
    assert first.case_index - 30 < 40
    assert 20 <= first.change_point <= first.case_index
    # Standardisation uses the baseline mean and SD (VAS change, points).
    assert standardised(-2.0, -4.0, 2.0) == pytest.approx(1.0)
    with pytest.raises(ChartDesignError):
        standardised(-2.0, -4.0, 0.0)
