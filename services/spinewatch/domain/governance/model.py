"""The governance report as plain values: every number already computed, nothing to render.

One `GovernanceReport` holds what a quality lead or a morbidity and
mortality meeting reads (see README, "Governance report"): per site and
cohort (site x procedure x indication) each monitored metric against its
cited comparator with its flags; funnel plots of sites per metric and
stratum; each site's drift charts as series (CUSUM with its limit, VLAD)
with signals, resets and change points; follow-up completeness; the alert
history. No field holds a patient or procedure identifier: cases are
positions and clinical dates only.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum


class Flag(StrEnum):
    """What marks a row; `LEGEND` says what each means, in the report and the demo."""

    ABOVE_RANGE = "above-range"
    BELOW_RANGE = "below-range"
    ABOVE_FUNNEL_95 = "above-95"
    ABOVE_FUNNEL_998 = "above-99.8"
    BELOW_FUNNEL_95 = "below-95"
    BELOW_FUNNEL_998 = "below-99.8"
    CHART_SIGNALLING = "chart-signalling"


# (mark, words): the mark is text, so a flag never rests on colour alone.
LEGEND: dict[Flag, tuple[str, str]] = {
    Flag.ABOVE_RANGE: (
        "▲R",
        "above the published range: the whole 95% Wilson interval lies above the range the "
        "literature reports for this cohort or its broader group",
    ),
    Flag.BELOW_RANGE: ("▼R", "below the published range: the whole 95% interval lies below it"),
    Flag.ABOVE_FUNNEL_95: (
        "▲2",
        "above the funnel's 95% limit at this denominator (about 2 SD; expected by chance for "
        "1 row in 40)",
    ),
    Flag.ABOVE_FUNNEL_998: (
        "▲3",
        "above the funnel's 99.8% limit (about 3 SD; 1 in 1000 by chance): an outlier",
    ),
    Flag.BELOW_FUNNEL_95: ("▽2", "below the funnel's 95% lower limit (fewer events than expected)"),
    Flag.BELOW_FUNNEL_998: ("▽3", "below the funnel's 99.8% lower limit"),
    Flag.CHART_SIGNALLING: (
        "⚑",
        "the site's risk-adjusted CUSUM for this metric is signalling: it crossed its limit h "
        "and fewer than the resolve-after number of cases have passed since",
    ),
}


@dataclass(frozen=True, slots=True)
class Comparator:
    """The literature figure a row is set against, as a reader cites it."""

    label: str  # author or series, year, seed: e.g. "Weill 1996 (ref. 12), in ... (seed 003)"
    seed: str  # "seed 003": never the hash-named file
    locator: str  # where in the seed
    quote: str  # the seed's own words
    described: str  # the figure as printed, e.g. "3/37 (8.11%)"
    p0: float | None  # the point estimate tested against (None: a rule or a range only)
    exact_cohort: bool  # False: a broader published group stands in
    broader_group: str | None  # e.g. "pvp/metastasis_or_myeloma" when approximate


@dataclass(frozen=True, slots=True)
class PublishedRange:
    label: str
    seed: str
    quote: str
    described: str
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class FunnelPoint:
    coverage: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class CohortRow:
    """One monitored metric of one site cohort, observed against its comparator."""

    site_id: str
    procedure: str
    indication: str
    metric: str
    timepoint: str | None
    unit: str  # "treated_level" or "patient"
    numerator: int
    denominator: int
    rate: float | None
    low: float | None  # 95% Wilson interval
    high: float | None
    comparator: Comparator | None
    published_range: PublishedRange | None
    note: str | None  # the comparator policy's words: why this figure, or why none
    p_value: float | None  # exact one-sided P(X >= observed) at p0
    funnel: tuple[FunnelPoint, ...]  # the 95% and 99.8% limits at this denominator
    flags: tuple[Flag, ...]

    @property
    def key(self) -> str:
        """Names the row without any identifier: site, cohort and metric."""
        return f"{self.site_id}|{self.procedure}|{self.indication}|{self.metric}"


@dataclass(frozen=True, slots=True)
class FunnelSite:
    site_id: str
    numerator: int
    denominator: int
    rate: float
    flags: tuple[Flag, ...]


@dataclass(frozen=True, slots=True)
class Funnel:
    """Sites of one stratum on one metric against the stratum's comparator."""

    metric: str
    procedure: str
    indication: str
    unit: str
    p0: float
    comparator: Comparator
    sites: tuple[FunnelSite, ...]
    # Spiegelhalter's phi from the sites' winsorised z-scores (1.0: no
    # significant excess spread, or too few sites); never applied to the
    # limits, as the worker's are exact binomial (see README).
    overdispersion: float | None


@dataclass(frozen=True, slots=True)
class ChartMark:
    """A case of a chart's series where something happened."""

    position: int  # 0-based case number on the chart
    on: date  # clinical date of the case


@dataclass(frozen=True, slots=True)
class ChartSignal:
    at: ChartMark
    change_point: ChartMark
    statistic: float
    observed: float | None  # events since the change point (rate charts)
    expected: float | None


@dataclass(frozen=True, slots=True)
class OperatorReset:
    """A reset recorded on the audit topic (closing an investigation)."""

    on: date


@dataclass(frozen=True, slots=True)
class ChartSeries:
    """One drift chart of one site: the fold over its cases, case by case."""

    site_id: str
    metric: str
    direction: str
    kind: str  # "rate" (Bernoulli CUSUM with VLAD), "vas" (CUSUM of VAS change)
    limit: float  # h
    dates: tuple[date, ...]  # clinical date of each case
    statistic: tuple[float, ...]  # CUSUM after each case
    vlad: tuple[float, ...]  # expected minus observed, cumulative (rate charts; else empty)
    signals: tuple[ChartSignal, ...]  # each followed by the automatic reset to 0
    in_control: bool
    arl0_cases: float
    arl1_cases: float
    volume_per_month: float | None  # None: a fixed chart, designed for no volume
    odds_ratio: float | None  # rate charts: shift to detect
    shift_sd: float | None  # VAS charts
    provisional: bool
    operator_resets: tuple[OperatorReset, ...] = ()

    @property
    def arl0_months(self) -> float | None:
        return self.arl0_cases / self.volume_per_month if self.volume_per_month else None

    @property
    def arl1_months(self) -> float | None:
        return self.arl1_cases / self.volume_per_month if self.volume_per_month else None


@dataclass(frozen=True, slots=True)
class Completeness:
    site_id: str
    timepoint: str
    counts: dict[str, int]
    closed: int
    received: int  # of the closed, received on time or late
    completeness: float | None
    clarks_c: float | None


@dataclass(frozen=True, slots=True)
class AlertEpisode:
    """One alert's history from the audit topic: its latest status and every transition."""

    fingerprint: str
    site_id: str
    metric: str
    direction: str
    severity: str
    status: str  # the latest transition, e.g. firing, acknowledged, investigating, closed
    first_at: str
    last_at: str
    investigation_status: str | None
    finding: str | None  # a category from the documented list; never the free-text note
    transitions: tuple[tuple[str, str, str | None], ...]  # (transition, at, actor)


@dataclass(frozen=True, slots=True)
class Scope:
    """What the report covers: clinical dates (procedure date) and sites."""

    start: date | None
    end: date | None
    sites: tuple[str, ...]  # empty: every site


@dataclass(frozen=True, slots=True)
class GovernanceReport:
    title: str
    source: str  # where the state came from, e.g. "replayed file events.jsonl"
    generated_at: str
    scope: Scope
    catalog_version: str
    rows: tuple[CohortRow, ...]
    funnels: tuple[Funnel, ...]
    charts: tuple[ChartSeries, ...]
    completeness: tuple[Completeness, ...]
    alerts: tuple[AlertEpisode, ...]
    settings: dict[str, str] = field(default_factory=dict)  # the design inputs, as shown
