"""A cohort's outcome report: each metric read from its tallies, beside its literature figure.

A cohort's tallies are summed integers (see `contribution`); this module turns
them into the rows a clinician reads: a rate with its 95% Wilson interval or
a VAS mean with its SD, next to the published figure it should be compared
with. Which figure that is follows fixed rules, so two readers of the same
tallies always see the same comparator:

* the literature figure must count the same unit (a per-level leakage rate
  is never set against a per-patient one: a patient with two levels treated
  counts once in one and twice in the other) and the same timepoint;
* the seeds' own cohort (procedure, indication) is preferred; failing that, a
  broader published group is used (cancer series pooling metastases and
  myeloma, then "mixed" series, then PVP/PKP pooled as "vertebral
  augmentation") and the match says it is only approximate;
* appropriateness signals have no published rate: the seeds state them as
  rules, so their expected value is zero and the rule itself is cited.

Pure: no I/O. The catalog is passed in, never loaded here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from spinewatch.baselines.catalog import comparators
from spinewatch.baselines.model import (
    BaselineCatalog,
    BaselineEntry,
    BaselineTimepoint,
    Citation,
    Mean,
    MeanSd,
    Proportion,
    Quantity,
    Share,
    Threshold,
    ValueRange,
)
from spinewatch.contracts.vocabulary import (
    ComplicationCategory,
    FollowupTimepoint,
    Indication,
    LeakageSite,
    ProcedureType,
)
from spinewatch.domain.aggregates import add_into, mean_sd, wilson_rate
from spinewatch.domain.contribution import (
    ANALGESIC_REPORTED_WEEK_1,
    ANALGESIC_SAME_OR_MORE_WEEK_1,
    LEVELS_ASSESSED_FOR_LEAKAGE,
    LEVELS_WITH_LEAKAGE,
    PATIENTS,
    PATIENTS_ASSESSED_FOR_LEAKAGE,
    PATIENTS_WITH_COMPLICATION,
    PATIENTS_WITH_LEAKAGE,
    PATIENTS_WITH_SYMPTOMATIC_LEAKAGE,
    PRE_PROCEDURE,
    PVP_ALONE_WITH_NEURO_DEFICIT,
    SUSPECTED_TUMOUR_PROCEDURES,
    SUSPECTED_TUMOUR_WITHOUT_BIOPSY,
    Tally,
    levels_with_leakage_at,
    patients_with,
)

Unit = Literal["treated_level", "patient"]
RowKind = Literal["rate", "mean"]

# Leakage and peri-procedural reactions happen on the table: the catalog files
# those figures under this timepoint.
INTRA_PROCEDURE = BaselineTimepoint.INTRA_PROCEDURE.value

# Seed 003 defines a good result as a 50% pain reduction; the responder tally
# uses that threshold, so the row points at the definition it implements.
RESPONDER_DEFINITION_ID = "s003.good_result_definition"


@dataclass(frozen=True, slots=True)
class RateMetric:
    """A proportion of two tallies, and the catalog metric it is compared with."""

    name: str
    numerator_tally: str
    denominator_tally: str
    unit: Unit
    timepoint: str | None  # None: over the whole follow-up
    catalog_metric: str | None
    expected_zero: bool = False  # an appropriateness signal: any event is a finding
    only_for: ProcedureType | None = None  # reported only for cohorts of this procedure
    definition_id: str | None = None  # catalog entry defining what the numerator counts


@dataclass(frozen=True, slots=True)
class MeanMetric:
    """A VAS series (mean and SD); the catalog metric has the same name."""

    name: Literal["vas_score", "vas_change"]
    series: str
    timepoint: str


@dataclass(frozen=True, slots=True)
class BaselineMatch:
    """The literature figure a row is compared with, and where it is printed."""

    entry_id: str | None  # None: a practice rule of the seeds, not a catalog figure
    described: str
    value: float | None  # point value; None for a published range
    low: float | None
    high: float | None
    sd: float | None
    source: Citation
    exact_cohort: bool  # False: a broader published group stands in for this cohort
    literature_procedure: str
    literature_indication: str
    further_sources: tuple[Citation, ...] = ()


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


# --- what is measured ---------------------------------------------------------

# The catalog prints site-specific leakage per patient while the tallies count
# levels, so these comparators only appear if a per-level figure is catalogued.
_SITE_CATALOG_METRIC: Mapping[LeakageSite, str | None] = {
    LeakageSite.PARAVERTEBRAL: "paravertebral_leakage_rate",
    LeakageSite.EPIDURAL: "foraminal_or_epidural_leakage_rate",
    LeakageSite.FORAMINAL: "foraminal_or_epidural_leakage_rate",
    LeakageSite.VENOUS_PULMONARY: None,
    LeakageSite.INTRADISCAL: None,
}


def _per_patient(
    name: str, numerator: str, denominator: str = PATIENTS, timepoint: str | None = None
) -> RateMetric:
    """A per-patient rate the catalog files under the same metric name."""
    return RateMetric(name, numerator, denominator, "patient", timepoint, catalog_metric=name)


def _never(
    name: str, numerator: str, denominator: str = PATIENTS, only_for: ProcedureType | None = None
) -> RateMetric:
    """An appropriateness signal: the seeds' rules expect no such patient."""
    return RateMetric(name, numerator, denominator, "patient", None, None, True, only_for)


# A reaction to cement happens during injection; other complications are
# counted over the whole follow-up.
_PERI_PROCEDURAL = {ComplicationCategory.ALLERGIC_OR_HEMODYNAMIC_REACTION}
# Reported elsewhere (with leakage), or with no literature figure to name.
_NOT_ITEMISED = {ComplicationCategory.SYMPTOMATIC_CEMENT_LEAKAGE, ComplicationCategory.OTHER}

RATE_METRICS: tuple[RateMetric, ...] = (
    # Only levels (patients) whose imaging looked for leakage are denominators.
    RateMetric(
        "cement_leakage_rate_per_level",
        LEVELS_WITH_LEAKAGE,
        LEVELS_ASSESSED_FOR_LEAKAGE,
        "treated_level",
        INTRA_PROCEDURE,
        "cement_leakage_rate",
    ),
    RateMetric(
        "cement_leakage_rate_per_patient",
        PATIENTS_WITH_LEAKAGE,
        PATIENTS_ASSESSED_FOR_LEAKAGE,
        "patient",
        INTRA_PROCEDURE,
        "cement_leakage_rate",
    ),
    *(
        RateMetric(
            f"cement_leakage_rate_per_level_{site.value}",
            levels_with_leakage_at(site.value),
            LEVELS_ASSESSED_FOR_LEAKAGE,
            "treated_level",
            INTRA_PROCEDURE,
            _SITE_CATALOG_METRIC[site],
        )
        for site in LeakageSite
    ),
    # A leak that causes symptoms is a complication whatever the imaging, so
    # every patient is in the denominator.
    _per_patient(
        "symptomatic_cement_leakage_rate",
        PATIENTS_WITH_SYMPTOMATIC_LEAKAGE,
        PATIENTS,
        INTRA_PROCEDURE,
    ),
    _per_patient("complication_rate", PATIENTS_WITH_COMPLICATION),
    *(
        _per_patient(
            f"{category.value}_rate",
            patients_with(category),
            timepoint=INTRA_PROCEDURE if category in _PERI_PROCEDURAL else None,
        )
        for category in ComplicationCategory
        if category not in _NOT_ITEMISED
    ),
    # The catalog holds the definition of a good result, not a responder rate.
    *(
        RateMetric(
            "responder_rate",
            f"responders.{timepoint.value}",
            f"responder_eligible.{timepoint.value}",
            "patient",
            timepoint.value,
            None,
            definition_id=RESPONDER_DEFINITION_ID,
        )
        for timepoint in FollowupTimepoint
    ),
    _per_patient(
        "analgesic_same_or_more_rate",
        ANALGESIC_SAME_OR_MORE_WEEK_1,
        ANALGESIC_REPORTED_WEEK_1,
        FollowupTimepoint.WEEK_1.value,
    ),
    # Only vertebroplasty keeps this tally: a PKP cohort would read a false 0%.
    _never(
        "pvp_alone_with_neurological_deficit_rate",
        PVP_ALONE_WITH_NEURO_DEFICIT,
        only_for=ProcedureType.PVP,
    ),
    _never(
        "suspected_tumour_without_biopsy_rate",
        SUSPECTED_TUMOUR_WITHOUT_BIOPSY,
        SUSPECTED_TUMOUR_PROCEDURES,
    ),
)

VAS_SERIES: tuple[MeanMetric, ...] = (
    MeanMetric("vas_score", PRE_PROCEDURE, BaselineTimepoint.PRE_PROCEDURE.value),
    *(
        metric
        for timepoint in FollowupTimepoint
        for metric in (
            MeanMetric("vas_score", f"vas.{timepoint.value}", timepoint.value),
            # Paired change (follow-up minus the same patient's pre score).
            MeanMetric("vas_change", f"vas_change.{timepoint.value}", timepoint.value),
        )
    ),
)


# --- practice rules with an expected value of zero ------------------------------


@dataclass(frozen=True, slots=True)
class PracticeRule:
    """A seed's 'do not' statement, read as: the expected rate is zero."""

    sources: tuple[Citation, ...]
    # Indications the seeds wrote the rule for; elsewhere it is extrapolated.
    stated_for: frozenset[Indication]


PRACTICE_RULES: Mapping[str, PracticeRule] = {
    # Neurological deficit from a hemangioma needs decompression, which
    # vertebroplasty alone does not provide.
    "pvp_alone_with_neurological_deficit_rate": PracticeRule(
        sources=(
            Citation(
                seed="004_d9055c89a89cc58a.txt",
                locator="Critical Pitfalls to Avoid",
                quote="Do not rely on vertebroplasty alone for neurological deficit"
                " - decompression is mandatory",
            ),
            Citation(
                seed="002_89b7633e169d7278.txt",
                locator="Common Pitfalls to Avoid",
                quote="Do not use vertebroplasty for lesions with neurological deficit"
                " - decompressive surgery is required",
            ),
        ),
        stated_for=frozenset({Indication.HEMANGIOMA}),
    ),
    # Imaging alone can mistake a plasmacytoma or metastasis for a hemangioma
    # (seed 003's own case); the seed asks for histology before cementing.
    "suspected_tumour_without_biopsy_rate": PracticeRule(
        sources=(
            Citation(
                seed="003_ae02c8d4209e7f6b.txt",
                locator="Conclusions",
                quote="the biopsy before VP is determinant suspecting oncologic diseases",
            ),
        ),
        stated_for=frozenset(
            {Indication.HEMANGIOMA, Indication.METASTASIS, Indication.MYELOMA_PLASMACYTOMA}
        ),
    ),
}


def _expected_zero(
    metric: RateMetric, procedure: ProcedureType, indication: Indication
) -> BaselineMatch:
    rule = PRACTICE_RULES[metric.name]
    return BaselineMatch(
        entry_id=None,
        described="expected 0",
        value=0.0,
        low=None,
        high=None,
        sd=None,
        source=rule.sources[0],
        exact_cohort=indication in rule.stated_for,
        literature_procedure=procedure.value,
        literature_indication=indication.value,
        further_sources=rule.sources[1:],
    )


# --- finding the literature figure ----------------------------------------------

_CANCER_SERIES = "metastasis_or_myeloma"
_MIXED_SERIES = "mixed"
_POOLED_AUGMENTATION = "vertebral_augmentation"


def literature_groups(procedure: ProcedureType, indication: Indication) -> list[tuple[str, str]]:
    """(procedure, indication) groups to search, the cohort itself first.

    The procedure is kept before the indication is widened: leakage differs
    far more between PVP and PKP (seed 001: up to 65% against below 10%) than
    between tumour types.
    """
    indications = [indication.value]
    if indication in (Indication.METASTASIS, Indication.MYELOMA_PLASMACYTOMA):
        indications.append(_CANCER_SERIES)
    indications.append(_MIXED_SERIES)
    procedures = [procedure.value]
    if procedure.is_vertebral_augmentation:
        procedures.append(_POOLED_AUGMENTATION)
    return [(p, i) for p in procedures for i in indications]


def _timepoint_fits(metric_timepoint: str | None, entry: BaselineEntry) -> bool:
    entry_timepoint = entry.timepoint.value if entry.timepoint else None
    if metric_timepoint is None:
        # Over the whole follow-up: a figure with no timepoint, or the series'.
        return entry_timepoint in (None, BaselineTimepoint.SERIES_FOLLOW_UP.value)
    if metric_timepoint == INTRA_PROCEDURE:
        # An event seen only during the procedure: an undated figure can only
        # refer to the procedure (e.g. seed 003's 9.2% leakage with VP).
        return entry_timepoint in (None, INTRA_PROCEDURE)
    return entry_timepoint == metric_timepoint


def baseline_for(
    catalog: BaselineCatalog,
    catalog_metric: str,
    procedure: ProcedureType,
    indication: Indication,
    *,
    unit: Unit,
    timepoint: str | None,
) -> BaselineMatch | None:
    """The published figure to compare with, or None when the literature has none."""
    for group in literature_groups(procedure, indication):
        for entry in comparators(catalog, catalog_metric, *group):
            if entry.unit.value == unit and _timepoint_fits(timepoint, entry):
                exact = group == (procedure.value, indication.value)
                return _match(entry, exact_cohort=exact)
    return None


def _match(entry: BaselineEntry, *, exact_cohort: bool) -> BaselineMatch:
    stat = entry.statistic
    value: float | None
    low = high = sd = None
    if isinstance(stat, Proportion | Share | Threshold | Quantity):
        value = stat.value
    elif isinstance(stat, MeanSd):
        value, sd = stat.mean, stat.sd
    elif isinstance(stat, Mean):
        value = stat.mean
    elif isinstance(stat, ValueRange):
        value, low, high = None, stat.low, stat.high
    else:  # a Bound, the last kind of the union
        value = stat.value
        # "up to 65%" spans 0..65%; "more than 50%" spans 50..100%.
        low, high = (0.0, stat.value) if stat.comparator in ("<", "<=") else (stat.value, 1.0)
    return BaselineMatch(
        entry_id=entry.id,
        described=stat.describe(),
        value=value,
        low=low,
        high=high,
        sd=sd,
        source=entry.source,
        exact_cohort=exact_cohort,
        literature_procedure=str(entry.procedure),
        literature_indication=str(entry.indication),
    )


# --- the report -------------------------------------------------------------------


def sum_tallies(tallies: Iterable[Mapping[str, int]]) -> Tally:
    """One cohort tally from several (sites, operators, shards)."""
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
    table shows "no data" rather than silently dropping the line.
    """
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
    numerator = tally.get(metric.numerator_tally, 0)
    denominator = tally.get(metric.denominator_tally, 0)
    if not 0 <= numerator <= denominator:
        # Contributions make this impossible; a report must not paper over it.
        raise ValueError(f"{metric.name}: {numerator} of {denominator} is not a proportion")
    rate = wilson_rate(numerator, denominator)
    baseline: BaselineMatch | None = None
    if metric.expected_zero:
        baseline = _expected_zero(metric, procedure, indication)
    elif metric.catalog_metric is not None:
        baseline = baseline_for(
            catalog,
            metric.catalog_metric,
            procedure,
            indication,
            unit=metric.unit,
            timepoint=metric.timepoint,
        )
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
    )


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
