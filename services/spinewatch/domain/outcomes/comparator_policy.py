"""The comparator policy: which published figure each cohort's rate is compared with.

One resolver for every reader (report, `/metrics` funnel, drift charts,
`plan`), so they cannot disagree. The rules, for a rate metric and a cohort
(procedure x indication), at the metric's unit and timepoint:

1. Only a point estimate (a proportion such as 3/28, or a share such as
   9.2%) is a comparator. A range ("1-10%", "2-73%") or a bound ("up to
   65%") is never used as a point: charting "up to 65%" at p0 = 0.65 would
   look only for 79% leakage (issue 18). It is attached apart, as the
   published range a cohort's whole 95% interval can lie outside of.
2. The cohort's own figure first; failing that a documented broader group:
   cancer series pooling metastases and myeloma, then mixed series, then
   PVP and PKP pooled as "vertebral augmentation", marked approximate. A
   figure of the other procedure is never borrowed (seed 001: leakage up to
   65% with PVP, below 10% with PKP).
3. Among several point estimates of one group: the catalog's `preferred`,
   else the largest denominator (or n), then the id.
4. A published 0 (e.g. 0/26) cannot be charted: for a sentinel metric every
   case pages instead; for any other it is reported, not charted.
5. The choices these rules cannot make alone are in
   `baselines/comparators.toml`, each with its reason.

Pure: the catalog and the policy are passed in (the bundled policy is the
default, read once from the package like the catalog).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from spinewatch.baselines.model import (
    BaselineCatalog,
    BaselineEntry,
    Bound,
    Proportion,
    Share,
    ValueRange,
)
from spinewatch.baselines.policy import ComparatorChoice, ComparatorPolicy, load_policy
from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.domain.alerts.policy import SENTINEL_METRICS
from spinewatch.domain.outcomes.baseline_match import (
    POINT_KINDS,
    BaselineMatch,
    literature_groups,
    match_of,
    timepoint_fits,
)
from spinewatch.domain.outcomes.report_metrics import RATE_METRICS, RateMetric

Status = Literal["charted", "sentinel", "zero", "none"]

# Statistic kinds that may be a comparator, and those only flagged against.
POINT_ENTRY_KINDS = POINT_KINDS
RANGE_ENTRY_KINDS = frozenset({"range", "bound"})

_GROUP_NAMES = {
    "metastasis_or_myeloma": "cancer series (metastases and myeloma pooled)",
    "mixed": "mixed series",
    "vertebral_augmentation": "PVP and PKP pooled",
}


@dataclass(frozen=True, slots=True)
class Resolution:
    """One stratum's comparator under the policy, and why."""

    metric: RateMetric
    procedure: ProcedureType
    indication: Indication
    status: Status
    match: BaselineMatch | None  # the point estimate; None when there is none
    published_range: BaselineMatch | None  # a range or bound, for the flag only
    reason: str  # always said: what was chosen and why, or why nothing
    choice: ComparatorChoice | None = None  # the policy table's row, if any

    @property
    def p0(self) -> float | None:
        """The probability a chart tests against; None when nothing is charted."""
        return self.match.value if self.status == "charted" and self.match else None

    @property
    def basis(self) -> str:
        if self.match is None:
            return f"none: {self.reason}"
        if self.match.exact_cohort:
            return "exact"
        procedure, indication = self.match.literature_procedure, self.match.literature_indication
        pooled = procedure if procedure == "vertebral_augmentation" else indication
        return f"approximate: {_GROUP_NAMES.get(pooled, pooled)} ({procedure}/{indication})"


def resolve(
    catalog: BaselineCatalog,
    metric: RateMetric,
    procedure: ProcedureType,
    indication: Indication,
    policy: ComparatorPolicy | None = None,
) -> Resolution:
    """The policy's comparator for one stratum (cached per catalog and policy)."""
    policy = policy or load_policy()
    key = (id(catalog), id(policy), metric.name, procedure, indication)
    cached = _RESOLVED.get(key)
    if cached is not None and cached[0] is catalog and cached[1] is policy:
        return cached[2]
    if len(_RESOLVED) >= _RESOLVED_KEPT:
        _RESOLVED.clear()
    resolution = _resolve(catalog, metric, procedure, indication, policy)
    _RESOLVED[key] = (catalog, policy, resolution)
    return resolution


# A /metrics scrape asks once per report row; catalog and policy are immutable,
# so each answer is kept with the objects it came from (ids cannot be reused
# while the objects are held here).
_RESOLVED: dict[tuple[object, ...], tuple[BaselineCatalog, ComparatorPolicy, Resolution]] = {}
_RESOLVED_KEPT = 16_384


def metric_baseline(
    catalog: BaselineCatalog,
    metric: RateMetric,
    procedure: ProcedureType,
    indication: Indication,
    policy: ComparatorPolicy | None = None,
) -> BaselineMatch | None:
    """The point comparator for a rate metric and cohort, or None (see `resolve`)."""
    if metric.catalog_metric is None:
        return None
    return resolve(catalog, metric, procedure, indication, policy).match


def policy_table(
    catalog: BaselineCatalog, policy: ComparatorPolicy | None = None
) -> Iterator[Resolution]:
    """Every rate metric with a catalog figure x {PVP, PKP} x indication."""
    for metric in RATE_METRICS:
        if metric.catalog_metric is None or metric.expected_zero:
            continue
        for procedure in (ProcedureType.PVP, ProcedureType.PKP):
            if metric.only_for not in (None, procedure):
                continue
            for indication in Indication:
                yield resolve(catalog, metric, procedure, indication, policy)


# --- the rules ------------------------------------------------------------------


def _fitting(
    catalog: BaselineCatalog, metric: RateMetric, procedure: ProcedureType, indication: Indication
) -> list[tuple[int, BaselineEntry]]:
    """Outcome entries of the metric at its unit and timepoint, by group rank (0: own)."""
    groups = literature_groups(procedure, indication)
    rank = {group: i for i, group in enumerate(groups)}
    found = []
    for entry in catalog.baselines:
        group = (str(entry.procedure), str(entry.indication))
        if (
            entry.figure.value == "outcome"
            and entry.metric == metric.catalog_metric
            and group in rank
            and entry.unit.value == metric.unit
            and timepoint_fits(metric.timepoint, entry)
        ):
            found.append((rank[group], entry))
    return found


def _point(entry: BaselineEntry) -> bool:
    return isinstance(entry.statistic, Proportion | Share)


def _ranged(entry: BaselineEntry) -> bool:
    stat = entry.statistic
    return isinstance(stat, Bound) or (isinstance(stat, ValueRange) and stat.unit == "fraction")


def _size(entry: BaselineEntry) -> int:
    stat = entry.statistic
    if isinstance(stat, Proportion):
        return stat.denominator
    return stat.n or 0 if isinstance(stat, Share) else 0


def _best(candidates: list[tuple[int, BaselineEntry]]) -> BaselineEntry | None:
    """The closest group's preferred entry, else its largest series, then the id."""
    if not candidates:
        return None
    closest = min(rank for rank, _ in candidates)
    entries = [entry for rank, entry in candidates if rank == closest]
    return min(entries, key=lambda e: (not e.preferred, -_size(e), e.id))


def _resolve(
    catalog: BaselineCatalog,
    metric: RateMetric,
    procedure: ProcedureType,
    indication: Indication,
    policy: ComparatorPolicy,
) -> Resolution:
    cohort = (procedure.value, indication.value)
    fitting = _fitting(catalog, metric, procedure, indication)
    choice = policy.choice_for(metric.name, *cohort)

    ranged = _best([(rank, entry) for rank, entry in fitting if _ranged(entry)])
    if choice is not None and choice.range_entry is not None:
        ranged = catalog.entry(choice.range_entry)
    published_range = (
        match_of(catalog, ranged, exact_cohort=(ranged.procedure, ranged.indication) == cohort)
        if ranged is not None
        else None
    )

    def resolution(status: Status, match: BaselineMatch | None, reason: str) -> Resolution:
        return Resolution(
            metric, procedure, indication, status, match, published_range, reason, choice
        )

    if choice is not None and choice.entry is None:
        return resolution("none", None, choice.why)
    chosen = catalog.entry(choice.entry) if choice is not None and choice.entry else None
    if chosen is None:
        chosen = _best([(rank, entry) for rank, entry in fitting if _point(entry)])
    if chosen is None:
        return resolution("none", None, _nothing_found(catalog, metric, procedure, ranged))
    exact = (str(chosen.procedure), str(chosen.indication)) == cohort
    match = match_of(catalog, chosen, exact_cohort=exact)
    why = choice.why if choice is not None else _rule_reason(chosen, exact)
    value = match.value or 0.0
    if value <= 0.0:
        if metric.name in SENTINEL_METRICS:
            return resolution(
                "sentinel",
                match,
                f"published 0 ({match.described}): every case is a sentinel, paged",
            )
        return resolution("zero", match, f"published 0 ({match.described}): not chartable")
    if value >= 1.0:
        return resolution("zero", match, f"published 100% ({match.described}): not chartable")
    return resolution("charted", match, why)


def _rule_reason(entry: BaselineEntry, exact: bool) -> str:
    how = "the cohort's own figure" if exact else "the nearest broader group's figure"
    if entry.preferred:
        return f"{how}, preferred in the catalog"
    return f"{how}, the largest series" if _size(entry) else f"{how}"


def _nothing_found(
    catalog: BaselineCatalog,
    metric: RateMetric,
    procedure: ProcedureType,
    ranged: BaselineEntry | None,
) -> str:
    if ranged is not None:
        return (
            f"the seeds give only a range ({ranged.statistic.describe()}, {ranged.id}) "
            "and a range is never charted as a point"
        )
    elsewhere = sorted(
        f"{entry.indication}"
        for entry in catalog.baselines
        if entry.metric == metric.catalog_metric
        and str(entry.procedure) == procedure.value
        and entry.unit.value == metric.unit
        and _point(entry)
    )
    unit = "per level" if metric.unit == "treated_level" else "per patient"
    if elsewhere:
        return (
            f"no {procedure.value.upper()} figure {unit} for this indication or its broader "
            f"groups (the seeds give one only for: {', '.join(sorted(set(elsewhere)))})"
        )
    return f"the seeds give no {procedure.value.upper()} figure {unit} for this metric"
