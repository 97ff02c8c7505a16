"""Which drift charts a worker keeps, against which baselines, with which limits.

A chart monitors one rate metric at one site, across every stratum
(procedure type x indication) the catalog gives a figure for: each case is
weighed against its own stratum's baseline (risk adjustment), so a site
treating more metastases is not flagged for their higher complication
rate. Cases of a stratum with no figure are not charted.

Comparators. Each stratum's p0 is the point estimate the comparator
policy names (`spinewatch.domain.outcomes.comparator_policy`, table in
`baselines/comparators.toml`): a proportion or a share, never a range or a
bound ("up to 65%" charted at 0.65 would only look for 79% leakage). A
stratum whose seeds give only a range, or nothing, is not charted; the
cohort report flags a rate outside a published range separately. A
baseline of 0 (no pulmonary embolism in the seeds' series) cannot be
charted: every such event is a sentinel, paged on occurrence by the
alerting service.

The limit. Calibrating h on a mixture of strata is slow (the lattice of
mixed weights is fine-grained: 7-20 s per chart) and the mixture a site
will see is unknown at start-up. So each stratum's chart is designed alone
(exactly, Markov chain) for the target ARL0, and the chart takes the
largest of those limits: a site treating only one stratum then has at
least the target ARL0, and a mixed site's ARL0 lies between its strata's.
The price is a slightly longer detection delay where strata have smaller
limits; `spinewatch plan` shows each stratum's own design.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from spinewatch.baselines.model import BaselineCatalog
from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.domain.drift.arl import ChartDesign, calibrate, run_lengths
from spinewatch.domain.drift.cusum import ChartState, new_chart, observe_weighted
from spinewatch.domain.outcomes.baseline_match import BaselineMatch
from spinewatch.domain.outcomes.comparator_policy import resolve
from spinewatch.domain.outcomes.report_metrics import (
    RATE_METRICS,
    RateMetric,
    Unit,
    like_with_like,
)
from spinewatch.errors import ChartDesignError

Stratum = tuple[str, str]  # (procedure type, indication) values
# A case's outcome on one chart: (events, trials) for a rate, a VAS change in points.
Outcome = tuple[int, int] | float
# Only a published point estimate (proportion or share) is ever a p0.
P0Basis = Literal["published value"]
Direction = Literal["worse", "better"]
# (p0s, odds ratio, target ARL0) -> the largest single-stratum design over the p0s.
PerStratumDesign = Callable[[tuple[float, ...], float, float], "ChartDesign"]


@dataclass(frozen=True, slots=True)
class StratumRisk:
    """A stratum's expected probability per case, and where it comes from."""

    p0: float
    basis: P0Basis
    baseline: BaselineMatch
    # The policy's words for this stratum: exact, or which broader group.
    comparator_basis: str = "exact"
    # (numerator, denominator) tallies when the comparator's series counted
    # leakage on one modality: only levels assessed on it are charted (like
    # with like). None: the metric's own tallies.
    tallies: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class MonitoredChart:
    metric: RateMetric
    # Odds ratio and limit h, with the run lengths of the stratum that set h.
    design: ChartDesign
    strata: Mapping[Stratum, StratumRisk]
    # (ARL0, ARL1) in cases of a site treating only that stratum, at this h.
    run_lengths: Mapping[Stratum, tuple[float, float]]
    # Per stratum: log R, log(1 - p0 + R p0) and p0, so a fold computes each
    # case's LLR weight with two multiplications (the same arithmetic as
    # `llr_weight`, hence the same floats).
    weights: Mapping[Stratum, tuple[float, float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.weights:
            ratio = self.design.odds_ratio
            log_ratio = math.log(ratio)
            weights = {
                stratum: (log_ratio, math.log(1.0 - risk.p0 + ratio * risk.p0), risk.p0)
                for stratum, risk in self.strata.items()
            }
            object.__setattr__(self, "weights", weights)

    @property
    def direction(self) -> Direction:
        return "worse" if self.design.odds_ratio > 1 else "better"

    @property
    def name(self) -> str:
        return f"{self.metric.name}:{self.direction}"

    @property
    def metric_name(self) -> str:
        return self.metric.name

    @property
    def unit(self) -> Unit:
        return self.metric.unit

    def new_state(self) -> ChartState:
        return new_chart(self.design.odds_ratio, self.design.limit)

    def step(self, state: ChartState, outcome: Outcome, stratum: Stratum) -> ChartState:
        weights = self.weights.get(stratum)
        if weights is None or type(outcome) is not tuple:
            return state  # no literature figure to weigh this case by
        events, trials = outcome
        log_ratio, penalty, p0 = weights
        return observe_weighted(state, events * log_ratio - trials * penalty, events, trials * p0)


def monitorable_metrics() -> dict[str, RateMetric]:
    """Rate metrics with a catalog comparator (expected-zero rules are not charted)."""
    return {m.name: m for m in RATE_METRICS if m.catalog_metric is not None and not m.expected_zero}


def chart_probability(match: BaselineMatch) -> tuple[float, P0Basis]:
    """The probability a chart tests against: a published point estimate, nothing else."""
    if not match.is_point_estimate or match.value is None:
        raise ChartDesignError(
            f"baseline {match.entry_id} is a {match.kind} ({match.described}), not a point "
            "estimate: a range or bound is never charted"
        )
    p0 = match.value
    if p0 <= 0.0:
        raise ChartDesignError(
            f"baseline {match.entry_id} is 0 ({match.described}): every event is a sentinel "
            "to page on, not a rate to chart"
        )
    if p0 >= 1.0:
        raise ChartDesignError(f"baseline {match.entry_id} is {p0}: nothing to chart")
    return p0, "published value"


def chartable_strata(catalog: BaselineCatalog, metric: RateMetric) -> dict[Stratum, StratumRisk]:
    """Every augmentation stratum the comparator policy gives a chartable point estimate."""
    strata: dict[Stratum, StratumRisk] = {}
    for procedure in ProcedureType:
        if not procedure.is_vertebral_augmentation:
            continue
        for indication in Indication:
            resolution = resolve(catalog, metric, procedure, indication)
            match = resolution.match
            if resolution.status != "charted" or match is None:
                continue  # no point estimate, or a zero: reported, not charted
            p0, basis = chart_probability(match)
            like = like_with_like(metric, match.detection)
            tallies = (like.numerator_tally, like.denominator_tally) if like else None
            strata[(procedure.value, indication.value)] = StratumRisk(
                p0, basis, match, resolution.basis, tallies
            )
    return strata


def design_charts(
    catalog: BaselineCatalog,
    metric_names: Iterable[str],
    odds_ratios: Iterable[float],
    arl0_cases: float,
    designed: PerStratumDesign | None = None,
) -> tuple[MonitoredChart, ...]:
    """One chart per metric and odds ratio; a metric with nothing to chart is an error.

    `designed`, when given, supplies each chart's per-stratum design from
    the strata's p0s (a worker's start-up reads them from its design cache
    instead of calibrating); the per-stratum run lengths are then left to
    `site_design.stratum_run_lengths`, computed when a signal needs them.
    """
    metrics = monitorable_metrics()
    charts = []
    for name in metric_names:
        metric = metrics.get(name)
        if metric is None:
            raise ChartDesignError(f"no chart for {name!r}; choose from: {', '.join(metrics)}")
        strata = chartable_strata(catalog, metric)
        if not strata:
            raise ChartDesignError(f"the catalog gives no chartable baseline for {name}")
        for odds_ratio in odds_ratios:
            if designed is not None:
                p0s = tuple(sorted({risk.p0 for risk in strata.values()}))
                charts.append(
                    MonitoredChart(metric, designed(p0s, odds_ratio, arl0_cases), strata, {})
                )
                continue
            designs = [design_for(risk.p0, odds_ratio, arl0_cases) for risk in strata.values()]
            design = max(designs, key=_limit)
            lengths = {
                stratum: _run_lengths(risk.p0, odds_ratio, design.limit)
                for stratum, risk in strata.items()
            }
            charts.append(MonitoredChart(metric, design, strata, lengths))
    return tuple(charts)


def _limit(design: ChartDesign) -> float:
    return design.limit


@lru_cache(maxsize=256)
def _run_lengths(p0: float, odds_ratio: float, limit: float) -> tuple[float, float]:
    return run_lengths([(p0, 1.0)], odds_ratio, limit)


@lru_cache(maxsize=256)
def design_for(p0: float, odds_ratio: float, arl0_cases: float) -> ChartDesign:
    """The exact single-stratum design (cached: workers of one process share it)."""
    return calibrate([(p0, 1.0)], odds_ratio, arl0_cases)
