"""A cohort's outcome report: each metric read from its tallies, beside its literature figure.

A cohort's tallies are summed integers (see `contribution`); this module turns
them into the rows a clinician reads: a rate with its 95% Wilson interval or
a VAS mean with its SD, next to the published figure it should be compared
with. What is measured is listed in `report_metrics`; which published figure
a row is set against follows the fixed rules of `baseline_match`. Both are
re-exported here, so `spinewatch.domain.outcomes.report` stays the one import for
callers.

Pure: no I/O. The catalog is passed in, never loaded here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from spinewatch.baselines.model import BaselineCatalog
from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.domain.followup.pessimistic import with_pessimistic
from spinewatch.domain.outcomes.aggregates import add_into, mean_sd, wilson_rate
from spinewatch.domain.outcomes.baseline_match import (
    PRACTICE_RULES,
    BaselineMatch,
    PracticeRule,
    baseline_for,
    cite,
    expected_zero_match,
    literature_groups,
)
from spinewatch.domain.outcomes.comparator_policy import resolve
from spinewatch.domain.outcomes.contribution import Tally
from spinewatch.domain.outcomes.report_metrics import (
    INTRA_PROCEDURE,
    NOT_LIKE_WITH_LIKE,
    RATE_METRICS,
    RESPONDER_DEFINITION_ID,
    VAS_SERIES,
    MeanMetric,
    RateMetric,
    Unit,
    like_with_like,
)

# Re-exported on purpose: callers import every report name from this module.
__all__ = [
    "INTRA_PROCEDURE",
    "PRACTICE_RULES",
    "RATE_METRICS",
    "RESPONDER_DEFINITION_ID",
    "VAS_SERIES",
    "BaselineMatch",
    "MeanMetric",
    "PracticeRule",
    "RateMetric",
    "ReportRow",
    "RowKind",
    "Unit",
    "baseline_for",
    "cite",
    "cohort_report",
    "literature_groups",
    "sum_tallies",
]

RowKind = Literal["rate", "mean"]

# Leakage rows: their comparator's detection method decides what is counted.
LEAKAGE_METRICS = "cement_leakage_rate"


RangePosition = Literal["above", "within", "below"]


@dataclass(frozen=True, slots=True)
class ReportRow:
    metric: str
    timepoint: str | None
    kind: RowKind
    unit: Unit
    numerator: int | None  # None for means
    denominator: int  # n of the series for means
    value: float | None  # None when there is nothing to divide by
    low: float | None  # 95% Wilson interval for rates; None for means
    high: float | None
    sd: float | None
    baseline: BaselineMatch | None
    expected_zero: bool
    definition_id: str | None = None
    # A published range or bound for the cohort (or its broader group): never
    # a comparator, only what `range_position` flags against.
    published_range: BaselineMatch | None = None
    # The comparator policy's words: what was chosen and why, or why nothing.
    comparator_note: str | None = None

    @property
    def citation(self) -> str | None:
        """The comparator as a reader cites it: author or series, year, seed, quote."""
        return cite(self.baseline) if self.baseline is not None else None

    def range_position(self) -> RangePosition | None:
        """Where the rate stands against a published range (e.g. complications 1-10%).

        "above" or "below" only when the whole 95% interval lies outside the
        range; charts and p-values use the point estimate only, and this flag
        says separately that the cohort is outside what was published at all.
        None when there is no published range or no rate.
        """
        baseline = self.published_range
        if (
            baseline is None
            or baseline.low is None
            or baseline.high is None
            or self.low is None
            or self.high is None
        ):
            return None
        if self.low > baseline.high:
            return "above"
        if self.high < baseline.low:
            return "below"
        return "within"


# --- the report -------------------------------------------------------------------


def sum_tallies(tallies: Iterable[Mapping[str, int]]) -> Tally:
    """One cohort tally from several (sites, operators, partitions)."""
    total: Tally = {}
    for tally in tallies:
        add_into(total, tally)
    return total


def cohort_report(
    tally: Mapping[str, int],
    procedure: ProcedureType,
    indication: Indication,
    catalog: BaselineCatalog,
) -> list[ReportRow]:
    """Every rate of RATE_METRICS, then every series of VAS_SERIES, in that order.

    A metric with nothing to divide by still gets its row (value None), so a
    table shows "no data" rather than silently dropping the line. The
    pessimistic rows read the tally's lost follow-ups (`followup.pessimistic`);
    a tally without any equals the complete-case figure there.
    """
    tally = with_pessimistic(tally)
    rows = [
        _rate_row(metric, tally, procedure, indication, catalog)
        for metric in RATE_METRICS
        if metric.only_for in (None, procedure)
    ]
    rows += [_mean_row(metric, tally, procedure, indication, catalog) for metric in VAS_SERIES]
    return rows


def _rate_row(
    metric: RateMetric,
    tally: Mapping[str, int],
    procedure: ProcedureType,
    indication: Indication,
    catalog: BaselineCatalog,
) -> ReportRow:
    baseline: BaselineMatch | None = None
    published_range: BaselineMatch | None = None
    note: str | None = None
    counted = metric
    if metric.expected_zero:
        baseline = expected_zero_match(metric, procedure, indication)
    elif metric.catalog_metric is not None:
        resolution = resolve(catalog, metric, procedure, indication)
        baseline, published_range = resolution.match, resolution.published_range
        note = resolution.reason if resolution.status != "charted" else resolution.basis
        if baseline is not None and metric.name.startswith(LEAKAGE_METRICS):
            counted, note = _like_with_like(metric, baseline, note)
    numerator = tally.get(counted.numerator_tally, 0)
    denominator = tally.get(counted.denominator_tally, 0)
    if not 0 <= numerator <= denominator:
        # Contributions make this impossible; a report must not paper over it.
        raise ValueError(f"{metric.name}: {numerator} of {denominator} is not a proportion")
    rate = wilson_rate(numerator, denominator)
    return ReportRow(
        metric=metric.name,
        timepoint=metric.timepoint,
        kind="rate",
        unit=metric.unit,
        numerator=numerator,
        denominator=denominator,
        value=rate.value if rate else None,
        low=rate.low if rate else None,
        high=rate.high if rate else None,
        sd=None,
        baseline=baseline,
        expected_zero=metric.expected_zero,
        definition_id=metric.definition_id,
        published_range=published_range,
        comparator_note=note,
    )


def _like_with_like(
    metric: RateMetric, baseline: BaselineMatch, note: str
) -> tuple[RateMetric, str]:
    """Count only levels imaged as the comparator's series was, or say it cannot be checked."""
    like = like_with_like(metric, baseline.detection)
    if baseline.detection in (None, "not_stated"):
        return metric, f"{note}; {NOT_LIKE_WITH_LIKE}"
    if like is None:
        return metric, (
            f"{note}; the comparator counted leakage on {baseline.detection}, "
            "and this rate cannot be restricted to it"
        )
    return like, f"{note}; like with like: only levels assessed on {baseline.detection} counted"


def _mean_row(
    metric: MeanMetric,
    tally: Mapping[str, int],
    procedure: ProcedureType,
    indication: Indication,
    catalog: BaselineCatalog,
) -> ReportRow:
    moments = mean_sd(tally, metric.series)
    return ReportRow(
        metric=metric.name,
        timepoint=metric.timepoint,
        kind="mean",
        unit="patient",
        numerator=None,
        denominator=moments.n if moments else 0,
        value=moments.mean if moments else None,
        low=None,
        high=None,
        sd=moments.sd if moments else None,
        baseline=baseline_for(
            catalog, metric.name, procedure, indication, unit="patient", timepoint=metric.timepoint
        ),
        expected_zero=False,
    )
