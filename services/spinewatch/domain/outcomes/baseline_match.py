"""Which literature figure a report row is compared with, by fixed rules.

Separate from the report so the matching rules live in one place and two
readers of the same tallies always see the same comparator:

* the literature figure must count the same unit (a per-level leakage rate
  is never set against a per-patient one: a patient with two levels treated
  counts once in one and twice in the other) and the same timepoint;
* the seeds' own cohort (procedure, indication) is preferred; failing that, a
  broader published group is used (cancer series pooling metastases and
  myeloma, then "mixed" series, then PVP/PKP pooled as "vertebral
  augmentation") and the match says it is only approximate (for rate
  metrics, `comparator_policy` applies these groups with the policy table:
  point estimates only, ranges kept apart);
* appropriateness signals have no published rate: the seeds state them as
  rules, so their expected value is zero and the rule itself is cited.

Pure: no I/O. The catalog is passed in, never loaded here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.domain.outcomes.report_metrics import INTRA_PROCEDURE, RateMetric, Unit


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
    # The statistic's kind ("proportion", "share", "range", "bound", ...):
    # only a proportion or a share is a point estimate a chart may test against.
    kind: str = "rule"
    # Author or series, year and seed, e.g. "Weill 1996 (ref. 12), in
    # Barbanti Bròdano et al., review (seed 003)"; see `cite`.
    label: str = ""
    # Leakage figures: the imaging the series counted leakage on, or "not_stated".
    detection: str | None = None
    n: int | None = None  # the figure's denominator (or n), when printed

    @property
    def is_point_estimate(self) -> bool:
        return self.kind in POINT_KINDS and self.value is not None


POINT_KINDS = frozenset({"proportion", "share"})


def cite(match: BaselineMatch) -> str:
    """A citation a clinician can read: who, when, which seed, and the quoted words."""
    source = match.source
    who = match.label or f"seed {source.seed[:3]}"
    return f'{who}, {source.locator}: "{source.quote}"'


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


def expected_zero_match(
    metric: RateMetric, procedure: ProcedureType, indication: Indication
) -> BaselineMatch:
    """The practice rule behind an appropriateness signal, as an expected value of 0."""
    rule = PRACTICE_RULES[metric.name]
    seed = rule.sources[0].seed[:3]
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
        label=f"practice rule (seed {seed})",
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


def timepoint_fits(metric_timepoint: str | None, entry: BaselineEntry) -> bool:
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
            if entry.unit.value == unit and timepoint_fits(timepoint, entry):
                exact = group == (procedure.value, indication.value)
                return match_of(catalog, entry, exact_cohort=exact)
    return None


def entry_label(catalog: BaselineCatalog, entry: BaselineEntry) -> str:
    """'Weill 1996 (ref. 12), in Barbanti Bròdano et al., review (seed 003)'."""
    seed = catalog.seed(entry.source.seed)
    document = seed.label if seed else f"seed {entry.source.seed[:3]}"
    return f"{entry.study}, in {document}" if entry.study else document


def match_of(
    catalog: BaselineCatalog, entry: BaselineEntry, *, exact_cohort: bool
) -> BaselineMatch:
    """The comparison form of a catalog entry."""
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
    else:  # a Bound, the last kind of the union: never a point value
        value = None
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
        kind=stat.kind,
        label=entry_label(catalog, entry),
        detection=entry.detection,
        n=_n_of(stat),
    )


def _n_of(stat: object) -> int | None:
    if isinstance(stat, Proportion):
        return stat.denominator
    if isinstance(stat, Share | MeanSd | Mean):
        return stat.n
    return None


def metric_baseline(
    catalog: BaselineCatalog, metric: RateMetric, procedure: ProcedureType, indication: Indication
) -> BaselineMatch | None:
    """The comparator policy's point estimate for a rate metric and cohort (or None).

    Kept here for callers of the former lookup; the rules are in
    `comparator_policy` (point estimates only, the policy table's choices).
    """
    # Imported here: comparator_policy builds on this module.
    from spinewatch.domain.outcomes.comparator_policy import (  # noqa: PLC0415
        metric_baseline as policy_baseline,
    )

    return policy_baseline(catalog, metric, procedure, indication)
