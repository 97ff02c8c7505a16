"""Prometheus exposition of the cohort metrics, computed at scrape time.

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

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from spinewatch.baselines import load_catalog
from spinewatch.baselines.model import BaselineCatalog
from spinewatch.domain.aggregates import cohort_views
from spinewatch.domain.report import BaselineMatch, ReportRow, cohort_report
from spinewatch.engine import OutcomeEngine

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
        self.vas_n = cohort("spinewatch_vas_patients", "Patients in the VAS series.")
        self.vas_mean = cohort("spinewatch_vas_mean_score", "Mean VAS (0-10) of the series.")
        self.vas_sd = cohort("spinewatch_vas_sd_score", "Standard deviation of the VAS series.")
        self.baseline = baseline(
            "spinewatch_baseline_value", "Literature baseline (proportion, or VAS mean)."
        )
        self.baseline_low = baseline(
            "spinewatch_baseline_low_value", "Lower end of a published range or bound."
        )
        self.baseline_high = baseline(
            "spinewatch_baseline_high_value", "Upper end of a published range or bound."
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
        views = cohort_views(self._engine.totals(self._active_partitions()))
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
                if row.baseline is not None:
                    key = (procedure.value, indication.value, row.metric, row.timepoint or "")
                    baselines[key] = row.baseline
        for key, match in sorted(baselines.items()):
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
        return
    families.vas_n.add_metric(labels, row.denominator)
    if row.value is not None:
        families.vas_mean.add_metric(labels, row.value)
    if row.sd is not None:
        families.vas_sd.add_metric(labels, row.sd)


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
