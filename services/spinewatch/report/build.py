"""The governance report from an outcomes engine held in this process.

The engine is the worker's own (`engine.bootstrap.outcome_engine`), fed the
worker's own fact batches (see `report/sources.py`), so every figure is
computed by the code that computes the worker's: cohort totals, drift
charts with their per-site designs, follow-up completeness. This module
only reads that state and hands it to the pure model
(`domain/governance`), restricted to the period and sites asked for:

* cohort rows and funnels count the procedures performed in the period
  (their contributions, summed as the worker sums them; over the whole
  history they are exactly the worker's totals);
* a chart is the fold over the site's whole history (a CUSUM has no
  meaning from an arbitrary start), drawn over the period;
* follow-up completeness is as of the end of the period (or the site's
  clinical clock, if earlier);
* alerts are those with a transition in the period.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from typing import Any

from spinewatch.baselines import load_catalog
from spinewatch.domain.drift.site_charts import SiteCharts
from spinewatch.domain.governance.cohorts import cohort_rows, funnels
from spinewatch.domain.governance.history import alert_history, operator_resets
from spinewatch.domain.governance.model import (
    ChartSeries,
    Completeness,
    GovernanceReport,
    Scope,
)
from spinewatch.domain.governance.series import chart_series
from spinewatch.domain.outcomes.aggregates import add_into
from spinewatch.domain.outcomes.contribution import AggregateKey, Tally
from spinewatch.engine.drift_monitor import ChartReading
from spinewatch.engine.outcomes import OutcomeEngine
from spinewatch.engine.settings import Settings

DESIGN_WAIT_S = 120.0


def day_start_us(day: date) -> int:
    return int(datetime.combine(day, day_time(), UTC).timestamp() * 1_000_000)


def settle_charts(engine: OutcomeEngine, partitions: set[int]) -> None:
    """Refold every chart and wait until each site has its own design (as the worker ends)."""
    deadline = time.monotonic() + DESIGN_WAIT_S
    engine.refresh_drift(partitions)
    while engine.drift.designing() and time.monotonic() < deadline:
        time.sleep(0.05)
        engine.refresh_drift(partitions)
    engine.drift.take_outbox()  # the report publishes nothing


def period_totals(
    engine: OutcomeEngine, partitions: set[int], scope: Scope
) -> dict[AggregateKey, Tally]:
    """Cohort totals of the procedures performed in the period, as the worker sums them."""
    totals = engine.totals(partitions)  # settles every record first
    if scope.start is None and scope.end is None:
        return totals
    low = day_start_us(scope.start) if scope.start else None
    high = day_start_us(scope.end + timedelta(days=1)) if scope.end else None
    summed: dict[AggregateKey, Tally] = {}
    for partition in partitions:
        for contribution in engine.partitions[partition].contributions.values():
            at = contribution.occurred_at_us
            if (low is None or at >= low) and (high is None or at < high):
                add_into(summed.setdefault(contribution.key, {}), contribution.tally)
    return summed


def build_report(
    engine: OutcomeEngine,
    settings: Settings,
    scope: Scope,
    *,
    audit: Iterable[Mapping[str, Any]] = (),
    source: str,
    title: str = "spinewatch governance report",
) -> GovernanceReport:
    partitions = set(engine.partitions)
    settle_charts(engine, partitions)
    records = list(audit)
    readings = _readings(engine, partitions, scope)
    # A chart weighs each stratum of its site that has a comparator: those
    # cohorts of the site show its signal.
    signalling = {
        (r.site_id, r.chart.metric_name, *stratum)
        for r, _ in readings
        if not r.in_control
        for stratum in r.chart.strata
    }
    metrics = set(settings.drift_metrics)
    catalog = load_catalog()
    rows = cohort_rows(
        period_totals(engine, partitions, scope), catalog, metrics, signalling, scope.sites
    )
    resets = operator_resets(records)
    charts = []
    for reading, site in readings:
        index = next(j for j, t in enumerate(site.tracks) if t is reading.track)
        series = chart_series(
            reading.site_id,
            site,
            index,
            track=reading.track,
            in_control=reading.in_control,
            plan=reading.plan,
        )
        key = (series.site_id, series.metric, series.direction)
        if key in resets:
            series = _with_resets(series, resets[key])
        charts.append(series)
    return GovernanceReport(
        title=title,
        source=source,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        scope=scope,
        catalog_version=catalog.catalog_version,
        rows=tuple(rows),
        funnels=tuple(funnels(rows)),
        charts=tuple(charts),
        completeness=tuple(_completeness(engine, scope)),
        alerts=tuple(alert_history(records, scope.sites, scope.start, scope.end)),
        settings={
            "false-alarm budget": f"{settings.drift_arl0_months:g} months per chart",
            "shift detected": ", ".join(f"odds x{r:g}" for r in settings.drift_odds_ratios),
            "VAS shift": f"{settings.drift_vas_shift_sd:g} SD",
            "resolve after": f"{settings.drift_resolve_after_cases} cases without a signal",
        },
    )


def _with_resets(series: ChartSeries, resets: list[Any]) -> ChartSeries:
    from dataclasses import replace  # noqa: PLC0415

    return replace(series, operator_resets=tuple(resets))


def _readings(
    engine: OutcomeEngine, partitions: set[int], scope: Scope
) -> list[tuple[ChartReading, SiteCharts]]:
    found = []
    for reading in engine.drift.readings(partitions):
        site = _site(engine.drift.partitions, reading.site_id)
        if site is not None and (not scope.sites or reading.site_id in scope.sites):
            found.append((reading, site))
    if engine.followup is not None:
        books = engine.followup.books
        for reading in engine.followup.readings(partitions):
            site = next(
                (b.charts[reading.site_id] for b in books.values() if reading.site_id in b.charts),
                None,
            )
            if site is not None and (not scope.sites or reading.site_id in scope.sites):
                found.append((reading, site))
    return found


def _site(partitions: Mapping[int, Any], site_id: str) -> SiteCharts | None:
    for charts in partitions.values():
        site: SiteCharts | None = charts.sites.get(site_id)
        if site is not None:
            return site
    return None


def _completeness(engine: OutcomeEngine, scope: Scope) -> list[Completeness]:
    if engine.followup is None:
        return []
    end_us = day_start_us(scope.end + timedelta(days=1)) if scope.end else None
    found = []
    for book in engine.followup.books.values():
        as_of = (lambda clock: min(clock, end_us)) if end_us is not None else None
        for site_id, summaries in book.summaries(as_of, scope.sites or None):
            for timepoint, summary in summaries.items():
                found.append(
                    Completeness(
                        site_id=site_id,
                        timepoint=timepoint,
                        counts={str(k): v for k, v in summary.counts.items()},
                        closed=summary.closed,
                        received=summary.closed_received,
                        completeness=summary.completeness,
                        clarks_c=summary.clarks_c,
                    )
                )
    return sorted(found, key=lambda c: c.site_id)  # stable: timepoints in schedule order
