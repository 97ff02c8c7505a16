"""Prometheus exposition of the cohort metrics, computed when they are rendered.

The worker renders these collectors on a loop of their own and /metrics
serves the last rendering (`engine/metric_renderer.py`): what they cost
grows with the state held, and a scrape must not.

Only bounded dimensions become labels: site, procedure, indication,
operator (a pseudonymous code issued by the site), metric and timepoint.
No patient or procedure identifier exists at this level: the collector only
sees cohort tallies. Totals come from actively owned partitions only, so
summing a metric over all workers of a group counts every procedure once.

Names follow Prometheus conventions: proportions end in `_ratio`, VAS in
`_score` (points on the 0-10 scale), counts are plain gauges because a
retraction can lower them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from spinewatch.baselines import load_catalog
from spinewatch.baselines.model import BaselineCatalog
from spinewatch.domain.drift.arl import ChartDesign
from spinewatch.domain.drift.cusum import ChartState
from spinewatch.domain.drift.design import chart_probability
from spinewatch.domain.outcomes.aggregates import ALL, add_into, cohort_views
from spinewatch.domain.outcomes.funnel import FunnelLimits, exceedance_p_value, funnel_limits
from spinewatch.domain.outcomes.report import BaselineMatch, ReportRow, cohort_report
from spinewatch.engine.drift_monitor import ChartReading
from spinewatch.engine.outcomes import OutcomeEngine
from spinewatch.errors import ChartDesignError

COHORT_LABELS = ("site", "procedure", "indication", "operator", "metric", "timepoint")
BASELINE_LABELS = (
    "procedure",
    "indication",
    "metric",
    "timepoint",
    "baseline_id",
    "seed",
    "exact_cohort",
)


class _Families:
    def __init__(self) -> None:
        def cohort(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=COHORT_LABELS)

        def baseline(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=BASELINE_LABELS)

        self.numerator = cohort(
            "spinewatch_outcome_numerator", "Cases with the outcome (numerator of the rate)."
        )
        self.denominator = cohort(
            "spinewatch_outcome_denominator", "Cases at risk (denominator of the rate)."
        )
        self.rate = cohort("spinewatch_outcome_rate_ratio", "Observed proportion.")
        self.rate_low = cohort(
            "spinewatch_outcome_rate_lower_ratio", "Lower bound of the 95% Wilson interval."
        )
        self.rate_high = cohort(
            "spinewatch_outcome_rate_upper_ratio", "Upper bound of the 95% Wilson interval."
        )
        funnel_labels = (*COHORT_LABELS, "coverage")
        self.p_value = cohort(
            "spinewatch_outcome_exceedance_p_value",
            "Exact one-sided binomial P(at least this many) at the charted baseline.",
        )
        self.funnel_low = GaugeMetricFamily(
            "spinewatch_outcome_funnel_lower_ratio",
            "Funnel-plot lower limit at this denominator (exact binomial, interpolated).",
            labels=funnel_labels,
        )
        self.funnel_high = GaugeMetricFamily(
            "spinewatch_outcome_funnel_upper_ratio",
            "Funnel-plot upper limit at this denominator (exact binomial, interpolated).",
            labels=funnel_labels,
        )
        self.outside_range = cohort(
            "spinewatch_outcome_outside_published_range",
            "1 when the 95% interval lies wholly above a published range, -1 below, 0 within.",
        )
        self.vas_n = cohort("spinewatch_vas_patients", "Patients in the VAS series.")
        self.vas_mean = cohort("spinewatch_vas_mean_score", "Mean VAS (0-10) of the series.")
        self.vas_sd = cohort("spinewatch_vas_sd_score", "Standard deviation of the VAS series.")
        self.baseline = baseline(
            "spinewatch_baseline_value",
            "Literature point estimate compared with (proportion, or VAS mean).",
        )
        self.baseline_low = baseline(
            "spinewatch_baseline_low_value",
            "Lower end of a published range or bound (flagged against, never charted).",
        )
        self.baseline_high = baseline(
            "spinewatch_baseline_high_value",
            "Upper end of a published range or bound (flagged against, never charted).",
        )

    def all(self) -> Iterator[Metric]:
        yield from vars(self).values()


class OutcomeCollector(Collector):
    def __init__(
        self,
        engine: OutcomeEngine,
        active_partitions: Callable[[], set[int]],
        catalog: BaselineCatalog | None = None,
    ) -> None:
        self._engine = engine
        self._active_partitions = active_partitions
        self._catalog = catalog or load_catalog()

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        baselines: dict[tuple[str, str, str, str], BaselineMatch] = {}
        ranges: dict[tuple[str, str, str, str], BaselineMatch] = {}
        active = self._active_partitions()
        totals = self._engine.totals(active)
        # Lost follow-ups join the cohort tallies for the pessimistic rows.
        for cohort, lost in self._engine.followup_lost(active).items():
            totals[cohort] = {**totals.get(cohort, {})}
            add_into(totals[cohort], lost)
        views = cohort_views(totals)
        for view, tally in sorted(views.items()):
            procedure, indication = view.procedure_type, view.indication
            for row in cohort_report(tally, procedure, indication, self._catalog):
                labels = [
                    view.site_id,
                    procedure.value,
                    indication.value,
                    view.operator_ref,
                    row.metric,
                    row.timepoint or "",
                ]
                _add_row(families, labels, row)
                key = (procedure.value, indication.value, row.metric, row.timepoint or "")
                if row.baseline is not None:
                    baselines[key] = row.baseline
                if row.published_range is not None:
                    ranges[key] = row.published_range
        for key, match in sorted(baselines.items()):
            _add_baseline(families, key, match)
        for key, match in sorted(ranges.items()):
            _add_baseline(families, key, match)
        yield from families.all()


def _add_row(families: _Families, labels: list[str], row: ReportRow) -> None:
    if row.kind == "rate":
        families.numerator.add_metric(labels, row.numerator or 0)
        families.denominator.add_metric(labels, row.denominator)
        if row.value is not None and row.low is not None and row.high is not None:
            families.rate.add_metric(labels, row.value)
            families.rate_low.add_metric(labels, row.low)
            families.rate_high.add_metric(labels, row.high)
        position = row.range_position()
        if position is not None:
            families.outside_range.add_metric(labels, _RANGE_POSITION[position])
        # A funnel plot compares sites, not operators: cohort-level rows only.
        if labels[3] == ALL and row.baseline is not None and row.denominator > 0:
            _add_funnel(families, labels, row.numerator or 0, row.denominator, row.baseline)
        return
    families.vas_n.add_metric(labels, row.denominator)
    if row.value is not None:
        families.vas_mean.add_metric(labels, row.value)
    if row.sd is not None:
        families.vas_sd.add_metric(labels, row.sd)


_RANGE_POSITION = {"above": 1, "within": 0, "below": -1}


def _add_funnel(
    families: _Families, labels: list[str], events: int, trials: int, baseline: BaselineMatch
) -> None:
    try:
        p0, _ = chart_probability(baseline)  # a point estimate only, as charted
    except ChartDesignError:
        return  # a zero baseline (sentinel events) or a rule: no funnel
    families.p_value.add_metric(labels, exceedance_p_value(events, trials, p0))
    for limits in _funnel(trials, p0):
        coverage = [*labels, f"{limits.coverage:g}"]
        families.funnel_low.add_metric(coverage, limits.low)
        families.funnel_high.add_metric(coverage, limits.high)


@lru_cache(maxsize=16_384)
def _funnel(trials: int, p0: float) -> list[FunnelLimits]:
    # Denominators repeat from scrape to scrape: quantiles are computed once.
    return funnel_limits(trials, p0)


def _add_baseline(families: _Families, key: tuple[str, ...], match: BaselineMatch) -> None:
    labels = [
        *key,
        match.entry_id or "practice_rule",
        match.source.seed,
        str(match.exact_cohort).lower(),
    ]
    if match.value is not None:
        families.baseline.add_metric(labels, match.value)
    if match.low is not None:
        families.baseline_low.add_metric(labels, match.low)
    if match.high is not None:
        families.baseline_high.add_metric(labels, match.high)


DRIFT_LABELS = ("site", "metric", "direction")


class DriftCollector(Collector):
    """Each drift chart of the owned sites: statistic, limit, state, VLAD, signals.

    A rendering refolds whatever changed first, so the gauges are exact at
    the moment they are rendered (`spinewatch_metrics_render_age_seconds`
    says how long ago that was). `spinewatch_drift_chart_state` is 0 in control
    and 1 from a signal until the chart is back in control (see
    `Track.in_control`), so a Prometheus rule can alert on it directly.
    """

    def __init__(self, engine: OutcomeEngine, active_partitions: Callable[[], set[int]]) -> None:
        self._engine = engine
        self._active_partitions = active_partitions

    def collect(self) -> Iterator[Metric]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=DRIFT_LABELS)

        statistic = gauge("spinewatch_drift_chart_statistic", "CUSUM statistic of the chart.")
        limit = gauge("spinewatch_drift_chart_limit", "Control limit h of the chart.")
        state = gauge("spinewatch_drift_chart_state", "0 in control, 1 signalling.")
        vlad = gauge(
            "spinewatch_drift_vlad_cases",
            "VLAD: cumulative expected minus observed adverse outcomes.",
        )
        signals = gauge("spinewatch_drift_signals", "Signals of the chart over its history.")
        cases = gauge("spinewatch_drift_chart_cases", "Cases (levels or patients) on the chart.")
        resets = gauge(
            "spinewatch_drift_chart_resets",
            "Operator resets of the chart (closed investigations): each restarts the CUSUM.",
        )
        design = _DesignFamilies(gauge)
        active = self._active_partitions()
        self._engine.refresh_drift(active)
        readings = list(self._engine.drift.readings(active))
        if self._engine.followup is not None:  # the follow-up completeness charts
            readings += self._engine.followup.readings(active)
        for reading in readings:
            labels = [reading.site_id, reading.chart.metric_name, reading.chart.direction]
            chart_state = reading.track.state
            statistic.add_metric(labels, chart_state.statistic)
            limit.add_metric(labels, chart_state.limit)
            state.add_metric(labels, 0 if reading.in_control else 1)
            if isinstance(chart_state, ChartState):  # VLAD counts adverse outcomes
                vlad.add_metric(labels, chart_state.vlad)
            signals.add_metric(labels, len(chart_state.signals))
            cases.add_metric(labels, chart_state.cases)
            resets.add_metric(labels, reading.resets)
            design.add(labels, reading)
        pending = GaugeMetricFamily(
            "spinewatch_drift_design_pending",
            "1 while a site's chart design is being measured or calibrated (its gauges may move).",
        )
        pending.add_metric([], 1 if self._engine.drift.designing() else 0)
        yield from (statistic, limit, state, vlad, signals, cases, resets, pending)
        yield from design.all()


class _DesignFamilies:
    """Each chart's design for its site: what it achieves, and what it was designed for.

    The inputs (volume, shares, budget, shift) are exactly what
    `spinewatch plan --site` reads to recompute the same design.
    """

    def __init__(self, gauge: Callable[[str, str], GaugeMetricFamily]) -> None:
        self.arl0_cases = gauge(
            "spinewatch_drift_chart_arl0_cases", "Designed cases between false alarms (ARL0)."
        )
        self.arl1_cases = gauge(
            "spinewatch_drift_chart_arl1_cases", "Designed cases to detect the shift (ARL1)."
        )
        self.arl0_months = gauge(
            "spinewatch_drift_chart_arl0_months", "ARL0 in months at the designed volume."
        )
        self.arl1_months = gauge(
            "spinewatch_drift_chart_arl1_months", "ARL1 in months at the designed volume."
        )
        self.volume = gauge(
            "spinewatch_drift_design_volume_per_month",
            "Cases a month on this chart the design is for (quantised to 2 digits).",
        )
        self.budget = gauge(
            "spinewatch_drift_design_budget_months", "False-alarm budget: months per false alarm."
        )
        self.odds_ratio = gauge(
            "spinewatch_drift_design_odds_ratio", "Rate charts: shift to detect."
        )
        self.shift_sd = gauge("spinewatch_drift_design_shift_sd", "VAS charts: shift in SD.")
        self.provisional = gauge(
            "spinewatch_drift_design_provisional",
            "1: too little history, designed per stratum at the default volume.",
        )
        self.share = GaugeMetricFamily(
            "spinewatch_drift_design_stratum_share",
            "Share of the chart's cases in this stratum, as designed (to 0.05).",
            labels=(*DRIFT_LABELS, "procedure", "indication"),
        )
        self.false_alarms = GaugeMetricFamily(
            "spinewatch_drift_site_false_alarms_per_year",
            "Expected false alarms a year across the site's charts, as designed.",
            labels=("site",),
        )
        self._per_site: dict[str, float] = {}

    def add(self, labels: list[str], reading: ChartReading) -> None:
        design, plan = reading.chart.design, reading.plan
        self.arl0_cases.add_metric(labels, design.arl0)
        self.arl1_cases.add_metric(labels, design.arl1)
        if isinstance(design, ChartDesign):
            self.odds_ratio.add_metric(labels, design.odds_ratio)
        else:
            self.shift_sd.add_metric(labels, design.shift_sd)
        if plan is None:
            return  # a fixed chart: designed in cases, for no volume
        volume = plan.volume_per_month
        self.arl0_months.add_metric(labels, design.arl0 / volume)
        self.arl1_months.add_metric(labels, design.arl1 / volume)
        self.volume.add_metric(labels, volume)
        self.budget.add_metric(labels, plan.arl0_months)
        self.provisional.add_metric(labels, 1 if plan.provisional else 0)
        for (procedure, indication), share in plan.shares:
            self.share.add_metric([*labels, procedure, indication], share)
        site = reading.site_id
        self._per_site[site] = self._per_site.get(site, 0.0) + 12.0 * volume / design.arl0

    def all(self) -> Iterator[Metric]:
        for site, per_year in sorted(self._per_site.items()):
            self.false_alarms.add_metric([site], per_year)
        yield from (v for v in vars(self).values() if isinstance(v, GaugeMetricFamily))


FOLLOWUP_LABELS = ("site", "timepoint")


class FollowupCollector(Collector):
    """Follow-up completeness per site and scheduled timepoint, as of the clinical clock.

    Labels are the site and the timepoint only: counts of follow-ups, never
    a patient or procedure. See domain/followup for the states and windows.
    """

    def __init__(self, engine: OutcomeEngine, active_partitions: Callable[[], set[int]]) -> None:
        self._engine = engine
        self._active_partitions = active_partitions

    def collect(self) -> Iterator[Metric]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=FOLLOWUP_LABELS)

        by_state = {
            state: gauge(f"spinewatch_followup_{state}", f"Scheduled follow-ups {doc}.")
            for state, doc in (
                ("pending", "whose window has not opened"),
                ("due", "whose window (or grace) is open, not received"),
                ("received", "received within window and grace"),
                ("received_late", "received after window and grace closed"),
                ("overdue", "missing after window and grace closed"),
                ("lost", "missing past the lost limit"),
                ("censored", "not received of patients who died"),
            )
        }
        closed = gauge("spinewatch_followup_closed", "Follow-ups whose window and grace closed.")
        completeness = gauge(
            "spinewatch_followup_completeness_ratio", "Received (on time or late) / closed."
        )
        clarks_c = gauge(
            "spinewatch_followup_clarks_c_ratio",
            "Clark's C: observed / potential follow-up time, up to the timepoint.",
        )
        followup = self._engine.followup
        if followup is not None:
            active = self._active_partitions()
            self._engine.totals(active)  # settles: the books see every applied fact
            followup.refresh(active)
            for site_id, summaries in followup.summaries(active):
                for timepoint, summary in summaries.items():
                    labels = [site_id, timepoint]
                    for state, family in by_state.items():
                        family.add_metric(labels, summary.counts.get(state, 0))  # type: ignore[call-overload]
                    closed.add_metric(labels, summary.closed)
                    if summary.completeness is not None:
                        completeness.add_metric(labels, summary.completeness)
                    if summary.clarks_c is not None:
                        clarks_c.add_metric(labels, summary.clarks_c)
        yield from (*by_state.values(), closed, completeness, clarks_c)
