"""Each site's own chart designs: its case mix and volume, at the budget in months.

A chart's limit h is calibrated (exact Markov chain, `arl.calibrate`) on
the site's own mixture of strata, for a target ARL0 of `arl0_months` times
the cases (levels or patients) the chart sees a month at that site: the
false-alarm budget is time, whatever the volume (`budget.py` says why 60
months).

What is measured. Per chart, the cases it weighed (a stratum with a
baseline and an outcome) in a trailing window of `WINDOW_MONTHS` of
clinical time; volume = those cases / the window (or the history, when
shorter); shares = each stratum's part of them. A site with less than
`MIN_HISTORY_MONTHS` of history or fewer than `MIN_WINDOW_CASES` cases on
the chart has no mix worth designing for yet: its chart is *provisional*,
designed as before per stratum (the largest single-stratum h, so any mix
gets at least the budget) at `DEFAULT_PROCEDURES_PER_MONTH`.

When it is measured. At monthly checkpoints of clinical time from the
site's first case (first + k months, once a case at or after it exists),
folding over the site's history: the design changes only when the volume
moved by more than `VOLUME_MARGIN` (25%) or a stratum's share by
`SHARE_MARGIN` (0.10) or more since the inputs it was designed for. The
design is therefore a pure function of the site's records, like the charts
(a worker rebuilt after a restart finds the same h, and the same signal
ids), while the margins stop a design from flapping on noise.

Quantised inputs (volume to 2 significant digits, shares to 0.05, a
present stratum at least 0.05) make designs reusable: sites of similar mix
share one calibration, cached by `DesignKey`.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal

from spinewatch.domain.drift.arl import ChartDesign, calibrate, run_lengths
from spinewatch.domain.drift.budget import DAYS_PER_MONTH, target_arl0_cases
from spinewatch.domain.drift.chart_fold import AnyChart, CaseKey, ChartCase
from spinewatch.domain.drift.design import MonitoredChart, Stratum, StratumRisk, design_for
from spinewatch.domain.drift.vas_chart import VasChartDesign, calibrate_vas
from spinewatch.domain.drift.vas_drift import MonitoredVasChart
from spinewatch.errors import CalibrationCancelled

# Bumped whenever the calibration or the key changes: on-disk caches keyed
# by an older version are ignored.
ALGORITHM_VERSION = 2

WINDOW_MONTHS = 12  # a year: seasonal swings in referrals average out
MIN_HISTORY_MONTHS = 3
MIN_WINDOW_CASES = 30  # fewer cases: a share of 0.10 is within noise of 0
VOLUME_MARGIN = 0.25
SHARE_MARGIN = 0.10
SHARE_STEP = 0.05
# A provisional chart's assumed volume: a middling centre (the demo's
# sites run 12-90 procedures a month).
DEFAULT_PROCEDURES_PER_MONTH = 20.0
# Seed 000: "26 patients" with "28 vertebrae" treated. A per-level chart
# sees about this many cases per procedure where nothing is measured.
LEVELS_PER_PROCEDURE = 28 / 26
MONTH_US = DAYS_PER_MONTH * 86_400 * 1_000_000

Shares = tuple[tuple[Stratum, float], ...]


@dataclass(frozen=True, slots=True)
class DesignKey:
    """Everything a calibration depends on; equal keys, equal designs.

    `kind` "mix": h calibrated on the mixture (p0, share); "per_stratum":
    the largest single-stratum h over the strata (a provisional chart);
    "vas": the VAS chart's h (mix-free: each change is standardised).
    """

    kind: Literal["mix", "per_stratum", "vas"]
    shift: float  # odds ratio, or VAS shift in SD
    target_arl0: float
    mix: tuple[tuple[float, float], ...] = ()  # (p0, share), sorted

    def as_text(self) -> str:
        mix = ",".join(f"{p!r}:{s!r}" for p, s in self.mix)
        return f"v{ALGORITHM_VERSION}|{self.kind}|{self.shift!r}|{self.target_arl0!r}|{mix}"


AnyDesign = ChartDesign | VasChartDesign


@dataclass(frozen=True, slots=True)
class SiteChartPlan:
    """What one chart of one site is designed for, and the key of its calibration."""

    key: DesignKey
    volume_per_month: float  # cases on this chart a month (quantised)
    shares: Shares  # () for VAS and provisional charts
    arl0_months: float
    provisional: bool
    # Clinical time of the checkpoint it was measured at; not part of what
    # the design is (a provisional plan's moves with every case).
    as_of_us: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class SiteBudget:
    """A site's budget, from settings: months between false alarms, volume if fixed."""

    arl0_months: float
    procedures_per_month: float | None = None


def quantise_volume(volume: float) -> float:
    """Two significant digits: 83.4 -> 83, 1234 -> 1200, 0.456 -> 0.46."""
    if volume <= 0:
        raise ValueError(f"volume must be positive, got {volume}")
    digits = 1 - math.floor(math.log10(volume))
    return round(volume, digits)


def quantise_shares(counts: Mapping[Stratum, float]) -> Shares:
    """Shares to the nearest 0.05, a present stratum at least 0.05, sorted by stratum."""
    total = sum(counts.values())
    steps = {s: max(1, round(n / total / SHARE_STEP)) for s, n in counts.items() if n > 0}
    return tuple((s, round(k * SHARE_STEP, 2)) for s, k in sorted(steps.items()))


def moved_beyond_margin(
    designed: tuple[float, Shares], measured: tuple[float, Shares], *, with_mix: bool
) -> bool:
    """True when the volume moved by more than 25% or a share by 0.10 or more."""
    old_volume, old_shares = designed
    volume, shares = measured
    if abs(volume / old_volume - 1.0) > VOLUME_MARGIN:
        return True
    if not with_mix:
        return False
    old, new = dict(old_shares), dict(shares)
    # 1e-9: shares are multiples of 0.05 stored as floats.
    return any(abs(new.get(s, 0.0) - old.get(s, 0.0)) >= SHARE_MARGIN - 1e-9 for s in old | new)


def chart_trials(chart: AnyChart, case: ChartCase, index: int) -> int:
    """Cases this chart weighs for one procedure (levels for a per-level rate).

    A VAS chart counts every patient of a charted stratum, follow-up
    received or not: the last months' follow-ups are still to come, and
    counting only those received would make every site look small and its
    chart alarm sooner than budgeted. Where fewer patients return, false
    alarms are rarer than budgeted, not more.
    """
    if case.stratum not in chart.strata:
        return 0
    outcome = case.outcomes[index]
    if isinstance(chart, MonitoredVasChart):
        return 1
    return outcome[1] if isinstance(outcome, tuple) else 0


@dataclass(frozen=True, slots=True)
class Measured:
    volume: float  # quantised cases a month
    shares: Shares
    as_of_us: int


Months = dict[int, Counter[Stratum]]  # month index from the first case -> trials by stratum


def monthly_trials(
    charts: Sequence[AnyChart], cases: Sequence[tuple[CaseKey, ChartCase]]
) -> list[Months]:
    """Per chart, the cases it weighed by month of clinical time: one pass over the site."""
    per_chart: list[Months] = [{} for _ in charts]
    if not cases:
        return per_chart
    first = cases[0][0][0]
    # (strata, is a VAS chart): the same count as `chart_trials`, inlined.
    kinds = [(chart.strata, isinstance(chart, MonitoredVasChart)) for chart in charts]
    for (at_us, _), case in cases:
        month = int((at_us - first) // MONTH_US)
        stratum = case.stratum
        for j, outcome in enumerate(case.outcomes):
            strata, vas = kinds[j]
            if stratum not in strata:
                continue
            trials = 1 if vas else outcome[1] if type(outcome) is tuple else 0
            if trials:
                per_chart[j].setdefault(month, Counter())[stratum] += trials
    return per_chart


def measure_history(
    chart: AnyChart, index: int, cases: Sequence[tuple[CaseKey, ChartCase]]
) -> Measured | None:
    """The inputs the chart's design follows (None: not enough history yet)."""
    if not cases:
        return None
    months = monthly_trials([chart], [(key, _only(case, index)) for key, case in cases])[0]
    return measure_months(chart, months, cases[0][0][0], cases[-1][0][0])


def _only(case: ChartCase, index: int) -> ChartCase:
    return ChartCase(case.stratum, (case.outcomes[index],))


def measure_months(chart: AnyChart, months: Months, first: int, last: int) -> Measured | None:
    """The fold over monthly checkpoints: adopt the inputs when they moved past the margin."""
    last_month = int((last - first) // MONTH_US)
    adopted: Measured | None = None
    with_mix = isinstance(chart, MonitoredChart)
    # Checkpoint k (at first + k months) sees months k-12 .. k-1; it has
    # passed once a case at or after it exists (k <= last_month).
    for k in range(MIN_HISTORY_MONTHS, last_month + 1):
        window: Counter[Stratum] = Counter()
        for month in range(max(0, k - WINDOW_MONTHS), k):
            window.update(months.get(month, {}))
        total = sum(window.values())
        if total < MIN_WINDOW_CASES:
            continue
        span = min(k, WINDOW_MONTHS)
        measured = Measured(
            quantise_volume(total / span),
            quantise_shares(window) if with_mix else (),
            int(first + k * MONTH_US),
        )
        if adopted is None or moved_beyond_margin(
            (adopted.volume, adopted.shares), (measured.volume, measured.shares), with_mix=with_mix
        ):
            adopted = measured
    return adopted


def trials_per_procedure(
    chart: AnyChart, index: int, cases: Sequence[tuple[CaseKey, ChartCase]]
) -> float:
    """The chart's cases per procedure in the site's last window (or the unit's default)."""
    if cases:
        since = cases[-1][0][0] - WINDOW_MONTHS * MONTH_US
        recent = [(key, case) for key, case in cases if key[0] >= since]
        trials = sum(chart_trials(chart, case, index) for _, case in recent)
        if trials:
            return trials / len(recent)
    return LEVELS_PER_PROCEDURE if chart.unit == "treated_level" else 1.0


def plan_site_chart(
    chart: AnyChart,
    index: int,
    cases: Sequence[tuple[CaseKey, ChartCase]],
    budget: SiteBudget,
) -> SiteChartPlan:
    """What this chart of this site is designed for (cases in clinical order)."""
    return _plan(chart, index, measure_history(chart, index, cases), cases, budget)


def plan_site(
    charts: Sequence[AnyChart], cases: Sequence[tuple[CaseKey, ChartCase]], budget: SiteBudget
) -> tuple[SiteChartPlan, ...]:
    """Every chart's plan for one site: the same as `plan_site_chart`, in one pass."""
    if not cases:
        return tuple(_plan(chart, j, None, cases, budget) for j, chart in enumerate(charts))
    first, last = cases[0][0][0], cases[-1][0][0]
    return tuple(
        _plan(chart, j, measure_months(chart, months, first, last), cases, budget)
        for j, (chart, months) in enumerate(zip(charts, monthly_trials(charts, cases), strict=True))
    )


def _plan(
    chart: AnyChart,
    index: int,
    measured: Measured | None,
    cases: Sequence[tuple[CaseKey, ChartCase]],
    budget: SiteBudget,
) -> SiteChartPlan:
    as_of = cases[-1][0][0] if cases else 0
    if budget.procedures_per_month is not None:
        per_procedure = trials_per_procedure(chart, index, cases)
        volume = quantise_volume(budget.procedures_per_month * per_procedure)
        if measured is not None:
            measured = replace(measured, volume=volume)
    else:
        volume = default_volume(chart)
    if measured is None:
        return provisional_plan(chart, budget.arl0_months, volume, as_of)
    return chart_plan(
        chart, budget.arl0_months, measured.volume, measured.shares, measured.as_of_us
    )


def default_volume(chart: AnyChart) -> float:
    """A provisional chart's cases a month: the default procedures, in its unit."""
    return default_volume_of(chart.unit)


def default_volume_of(unit: str) -> float:
    per_procedure = LEVELS_PER_PROCEDURE if unit == "treated_level" else 1.0
    return quantise_volume(DEFAULT_PROCEDURES_PER_MONTH * per_procedure)


def chart_plan(
    chart: AnyChart, arl0_months: float, volume: float, shares: Shares, as_of_us: int = 0
) -> SiteChartPlan:
    """The plan of a chart designed for this volume and mix."""
    if isinstance(chart, MonitoredVasChart):
        return vas_plan(chart.design.shift_sd, arl0_months, volume, as_of_us=as_of_us)
    return rate_plan(
        chart.strata, chart.design.odds_ratio, arl0_months, volume, shares, as_of_us=as_of_us
    )


def rate_plan(
    strata: Mapping[Stratum, StratumRisk],
    odds_ratio: float,
    arl0_months: float,
    volume: float,
    shares: Shares,
    *,
    provisional: bool = False,
    as_of_us: int = 0,
) -> SiteChartPlan:
    """A rate chart's plan: the worker's, and `spinewatch plan --site`'s from /metrics.

    Provisional: every stratum designed alone, the largest h (no mix known).
    """
    target = target_arl0_cases(arl0_months, volume)
    if provisional:
        p0s = tuple(sorted({(risk.p0, 1.0) for risk in strata.values()}))
        key = DesignKey("per_stratum", odds_ratio, target, p0s)
        return SiteChartPlan(key, volume, (), arl0_months, True, as_of_us)
    mix = _merged((strata[s].p0, share) for s, share in shares if s in strata)
    key = DesignKey("mix", odds_ratio, target, mix)
    return SiteChartPlan(key, volume, shares, arl0_months, False, as_of_us)


def vas_plan(
    shift_sd: float,
    arl0_months: float,
    volume: float,
    *,
    provisional: bool = False,
    as_of_us: int = 0,
) -> SiteChartPlan:
    """A VAS chart's plan (mix-free: each change is standardised by its stratum)."""
    key = DesignKey("vas", shift_sd, target_arl0_cases(arl0_months, volume))
    return SiteChartPlan(key, volume, (), arl0_months, provisional, as_of_us)


def provisional_plan(
    chart: AnyChart, arl0_months: float, volume: float, as_of_us: int = 0
) -> SiteChartPlan:
    """A chart without a measured mix: every stratum designed alone, the largest h."""
    if isinstance(chart, MonitoredVasChart):
        shift = chart.design.shift_sd
        return vas_plan(shift, arl0_months, volume, provisional=True, as_of_us=as_of_us)
    return rate_plan(
        chart.strata,
        chart.design.odds_ratio,
        arl0_months,
        volume,
        (),
        provisional=True,
        as_of_us=as_of_us,
    )


def _merged(mix: Iterable[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Strata with the same p0 are one component of the mixture."""
    shares: dict[float, float] = {}
    for p0, share in mix:
        shares[p0] = round(shares.get(p0, 0.0) + share, 2)
    return tuple(sorted(shares.items()))


# Designs this process computed, by key (a design is a pure function of its
# key: workers of one process, and a test session's, share them).
_COMPUTED: dict[DesignKey, AnyDesign] = {}
_COMPUTED_KEPT = 512


def compute_design(key: DesignKey, cancelled: Callable[[], bool] | None = None) -> AnyDesign:
    """The calibration a key names (slow for a mixture: seconds; run it off the event loop).

    `cancelled`, asked between solves, stops it (`CalibrationCancelled`).
    """
    known = _COMPUTED.get(key)
    if known is not None:
        return known
    design: AnyDesign
    if key.kind == "vas":
        design = calibrate_vas(key.shift, key.target_arl0)
    elif key.kind == "per_stratum":
        designs = []
        for p0, _ in key.mix:
            if cancelled is not None and cancelled():
                raise CalibrationCancelled("calibration cancelled")
            # `design_for` is memoised: charts of one metric family share strata.
            designs.append(design_for(p0, key.shift, key.target_arl0))
        design = max(designs, key=lambda design: design.limit)
    else:
        design = calibrate(key.mix, key.shift, key.target_arl0, cancelled=cancelled)
    if len(_COMPUTED) >= _COMPUTED_KEPT:
        del _COMPUTED[next(iter(_COMPUTED))]
    _COMPUTED[key] = design
    return design


@lru_cache(maxsize=4096)
def stratum_run_lengths(p0: float, odds_ratio: float, limit: float) -> tuple[float, float]:
    """(ARL0, ARL1) in cases of a site treating only this stratum, at this h."""
    return run_lengths([(p0, 1.0)], odds_ratio, limit)


def designed_chart(chart: AnyChart, design: AnyDesign) -> AnyChart:
    """The chart with this site's design.

    A rate chart's per-stratum run lengths (for signal messages) are left
    to `stratum_run_lengths`, cached, when a signal names the stratum.
    """
    if isinstance(chart, MonitoredVasChart):
        if not isinstance(design, VasChartDesign):
            raise TypeError("a VAS chart needs a VAS design")
        return replace(chart, design=design)
    if not isinstance(design, ChartDesign):
        raise TypeError("a rate chart needs a Bernoulli CUSUM design")
    return replace(chart, design=design, run_lengths={}, weights=chart.weights)
