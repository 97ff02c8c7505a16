"""Cohort rows and funnel plots of the governance report, from cohort tallies.

Every number comes from the functions the worker's /metrics uses
(`engine/metrics.py`): the row from `cohort_report` (Wilson interval,
comparator policy, like-with-like leakage, published range), the p-value
from `exceedance_p_value` and the limits from `funnel_limits` at the
charted p0 (`chart_probability`), for site cohorts over all operators. So a
flag here is a flag there: "above the published range" is the worker's
`spinewatch_outcome_outside_published_range` = 1, "above the 95% limit" is
the rate above `spinewatch_outcome_funnel_upper_ratio{coverage="0.95"}`.

Pure: no I/O. The catalog is passed in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from functools import lru_cache

from spinewatch.baselines.model import BaselineCatalog
from spinewatch.domain.drift.design import chart_probability
from spinewatch.domain.governance.model import (
    CohortRow,
    Comparator,
    Flag,
    Funnel,
    FunnelPoint,
    FunnelSite,
    PublishedRange,
)
from spinewatch.domain.outcomes.aggregates import ALL, cohort_views
from spinewatch.domain.outcomes.baseline_match import BaselineMatch
from spinewatch.domain.outcomes.contribution import AggregateKey, Tally
from spinewatch.domain.outcomes.funnel import (
    FunnelLimits,
    exceedance_p_value,
    funnel_limits,
    overdispersion_factor,
)
from spinewatch.domain.outcomes.report import ReportRow, cohort_report
from spinewatch.errors import ChartDesignError


def seed_name(seed_file: str) -> str:
    """ "seed 003" for "003_ae02c8d4209e7f6b.txt": the number, never the hashed file name."""
    return f"seed {seed_file[:3]}"


def comparator_of(match: BaselineMatch) -> Comparator:
    try:
        p0: float | None = chart_probability(match)[0]
    except ChartDesignError:
        p0 = None  # a rule (expected zero) or a range: nothing to test a rate against
    seed = seed_name(match.source.seed)
    return Comparator(
        label=match.label or seed,
        seed=seed,
        locator=match.source.locator,
        quote=match.source.quote,
        described=match.described,
        p0=p0,
        exact_cohort=match.exact_cohort,
        broader_group=None
        if match.exact_cohort
        else f"{match.literature_procedure}/{match.literature_indication}",
    )


def _range_of(match: BaselineMatch) -> PublishedRange | None:
    if match.low is None or match.high is None:
        return None
    return PublishedRange(
        label=match.label or seed_name(match.source.seed),
        seed=seed_name(match.source.seed),
        quote=match.source.quote,
        described=match.described,
        low=match.low,
        high=match.high,
    )


@lru_cache(maxsize=16_384)
def _limits(trials: int, p0: float) -> tuple[FunnelLimits, ...]:
    return tuple(funnel_limits(trials, p0))


def flags_of(
    row: ReportRow, p0: float | None, signalling: bool
) -> tuple[tuple[Flag, ...], tuple[FunnelPoint, ...], float | None]:
    """The row's flags, its funnel limits and its p-value, as the worker computes them."""
    flags: list[Flag] = []
    position = row.range_position()
    if position == "above":
        flags.append(Flag.ABOVE_RANGE)
    elif position == "below":
        flags.append(Flag.BELOW_RANGE)
    points: tuple[FunnelPoint, ...] = ()
    p_value = None
    if p0 is not None and row.denominator > 0 and row.value is not None:
        events = row.numerator or 0
        p_value = exceedance_p_value(events, row.denominator, p0)
        limits = _limits(row.denominator, p0)
        points = tuple(FunnelPoint(lim.coverage, lim.low, lim.high) for lim in limits)
        flags += _funnel_flags(row.value, limits)
    if signalling:
        flags.append(Flag.CHART_SIGNALLING)
    return tuple(flags), points, p_value


def _funnel_flags(rate: float, limits: Iterable[FunnelLimits]) -> list[Flag]:
    above = {0.95: Flag.ABOVE_FUNNEL_95, 0.998: Flag.ABOVE_FUNNEL_998}
    below = {0.95: Flag.BELOW_FUNNEL_95, 0.998: Flag.BELOW_FUNNEL_998}
    found = []
    for limit in limits:
        if rate > limit.high and limit.coverage in above:
            found.append(above[limit.coverage])
        elif rate < limit.low and limit.coverage in below:
            found.append(below[limit.coverage])
    return found


def cohort_rows(
    totals: Mapping[AggregateKey, Tally],
    catalog: BaselineCatalog,
    metrics: Collection[str],
    signalling: Collection[tuple[str, str, str, str]] = (),
    sites: Collection[str] = (),
) -> list[CohortRow]:
    """Each site cohort's monitored metrics (over all operators), in site and cohort order.

    `signalling` holds (site, metric, procedure, indication) of the charts
    out of control, for each stratum the chart weighs: every such cohort of
    the site shows the chart's flag (when it has cases on it).
    """
    rows = []
    for view, tally in sorted(cohort_views(totals).items()):
        if view.operator_ref != ALL or view.site_id == ALL:
            continue  # funnels compare sites; operators are not reported here
        if sites and view.site_id not in sites:
            continue
        procedure, indication = view.procedure_type, view.indication
        for row in cohort_report(tally, procedure, indication, catalog):
            if row.metric not in metrics or row.kind != "rate":
                continue
            comparator = comparator_of(row.baseline) if row.baseline is not None else None
            p0 = comparator.p0 if comparator is not None else None
            on_chart = row.denominator > 0 and (
                (view.site_id, row.metric, procedure.value, indication.value) in signalling
            )
            flags, funnel, p_value = flags_of(row, p0, on_chart)
            rows.append(
                CohortRow(
                    site_id=view.site_id,
                    procedure=procedure.value,
                    indication=indication.value,
                    metric=row.metric,
                    timepoint=row.timepoint,
                    unit=row.unit,
                    numerator=row.numerator or 0,
                    denominator=row.denominator,
                    rate=row.value,
                    low=row.low,
                    high=row.high,
                    comparator=comparator,
                    published_range=_range_of(row.published_range)
                    if row.published_range is not None
                    else None,
                    note=row.comparator_note,
                    p_value=p_value,
                    funnel=funnel,
                    flags=flags,
                )
            )
    return rows


def funnels(rows: Iterable[CohortRow]) -> list[Funnel]:
    """One funnel per metric and stratum with a point comparator: its sites as points."""
    grouped: dict[tuple[str, str, str], list[CohortRow]] = {}
    for row in rows:
        if row.comparator is not None and row.comparator.p0 is not None and row.rate is not None:
            grouped.setdefault((row.metric, row.procedure, row.indication), []).append(row)
    found = []
    for (metric, procedure, indication), members in sorted(grouped.items()):
        comparator = members[0].comparator
        if comparator is None or comparator.p0 is None:  # pragma: no cover - filtered above
            continue
        found.append(
            Funnel(
                metric=metric,
                procedure=procedure,
                indication=indication,
                unit=members[0].unit,
                p0=comparator.p0,
                comparator=comparator,
                sites=tuple(
                    FunnelSite(r.site_id, r.numerator, r.denominator, r.rate or 0.0, r.flags)
                    for r in members
                ),
                overdispersion=_phi(members, comparator.p0),
            )
        )
    return found


def _phi(members: list[CohortRow], p0: float) -> float | None:
    if len(members) < 2:
        return None
    return overdispersion_factor(
        [r.numerator for r in members], [r.denominator for r in members], p0
    )
