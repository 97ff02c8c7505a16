"""The VAS drift chart: is pain relief at a timepoint smaller than published?

One chart per monitored follow-up timepoint and site. A patient is a case
once both the pre-procedure and that timepoint's VAS are known; the case's
value is the paired change (follow-up minus pre, negative is relief),
standardised with its stratum's published change (`vas_chart.py` says why
a CUSUM and how its ARL is computed).

What the seeds give, and what is derived. Seed 000 publishes the mean and
SD of VAS before the procedure (7.4 +- 1.6) and at each timepoint (1.7 +-
0.6 post-operatively, 0.7 +- 0.4 at final follow-up), for PVP in
hemangioma, but not the SD of the paired change. The expected change is the
difference of the means; its SD, sqrt(sd_pre^2 + sd_post^2 - 2 r sd_pre
sd_post), depends on the unpublished correlation r. The chart takes r = 0:
for any r >= 0 that is the largest SD, so the chart is the least sensitive
plausible one, and raises no alarm because a guessed correlation was too
optimistic. Strata without published VAS are not charted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from spinewatch.baselines.model import BaselineCatalog
from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.domain.drift.design import Outcome, Stratum
from spinewatch.domain.drift.vas_chart import (
    VasChartDesign,
    VasChartState,
    calibrate_vas,
    new_vas_chart,
    observe_change,
    standardised,
)
from spinewatch.domain.outcomes.baseline_match import BaselineMatch, baseline_for
from spinewatch.domain.outcomes.contribution import vas_moments
from spinewatch.errors import ChartDesignError

PRE_PROCEDURE = "pre_procedure"


@dataclass(frozen=True, slots=True)
class VasStratum:
    mean_change: float  # points; negative is relief
    sd_change: float
    pre: BaselineMatch
    follow_up: BaselineMatch


@dataclass(frozen=True, slots=True)
class MonitoredVasChart:
    timepoint: str
    design: VasChartDesign
    strata: Mapping[Stratum, VasStratum]

    @property
    def direction(self) -> Literal["worse"]:
        return "worse"  # less relief than published

    @property
    def metric_name(self) -> str:
        return f"vas_change_{self.timepoint}"

    @property
    def name(self) -> str:
        return f"{self.metric_name}:{self.direction}"

    @property
    def unit(self) -> Literal["patient"]:
        return "patient"

    @property
    def change_tallies(self) -> tuple[str, str]:
        """Tally names of (patients with the change, their summed change in thousandths)."""
        n, total, _ = vas_moments(f"vas_change.{self.timepoint}")
        return n, total

    def new_state(self) -> VasChartState:
        return new_vas_chart(self.design.shift_sd, self.design.limit)

    def step(self, state: VasChartState, outcome: Outcome, stratum: Stratum) -> VasChartState:
        published = self.strata.get(stratum)
        if published is None or not isinstance(outcome, float):
            return state
        z = standardised(outcome, published.mean_change, published.sd_change)
        return observe_change(state, z)


def vas_strata(catalog: BaselineCatalog, timepoint: str) -> dict[Stratum, VasStratum]:
    strata: dict[Stratum, VasStratum] = {}
    for procedure in ProcedureType:
        for indication in Indication:
            pre = _vas_baseline(catalog, procedure, indication, PRE_PROCEDURE)
            post = _vas_baseline(catalog, procedure, indication, timepoint)
            if pre is None or post is None or pre.value is None or post.value is None:
                continue
            if pre.sd is None or post.sd is None:
                continue
            sd = math.hypot(pre.sd, post.sd)  # correlation 0: the widest plausible SD
            strata[(procedure.value, indication.value)] = VasStratum(
                post.value - pre.value, sd, pre, post
            )
    return strata


def _vas_baseline(
    catalog: BaselineCatalog, procedure: ProcedureType, indication: Indication, timepoint: str
) -> BaselineMatch | None:
    match = baseline_for(
        catalog, "vas_score", procedure, indication, unit="patient", timepoint=timepoint
    )
    # Only the published cohort itself: VAS from another pathology is no baseline.
    return match if match is not None and match.exact_cohort else None


def design_vas_charts(
    catalog: BaselineCatalog,
    timepoints: Iterable[str],
    shift_sd: float,
    arl0_cases: float,
    designed: Callable[[float, float], VasChartDesign] | None = None,
) -> tuple[MonitoredVasChart, ...]:
    """One chart per timepoint; `designed` (shift, target ARL0) supplies the design
    from a cache instead of calibrating it."""
    design_of = designed or vas_design
    charts = []
    for timepoint in timepoints:
        strata = vas_strata(catalog, timepoint)
        if not strata:
            raise ChartDesignError(f"the catalog gives no VAS mean and SD at {timepoint!r}")
        charts.append(MonitoredVasChart(timepoint, design_of(shift_sd, arl0_cases), strata))
    return tuple(charts)


@lru_cache(maxsize=32)
def vas_design(shift_sd: float, arl0_cases: float) -> VasChartDesign:
    return calibrate_vas(shift_sd, arl0_cases)
