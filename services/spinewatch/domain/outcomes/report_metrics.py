"""What a cohort report measures: each rate and VAS series, and the tallies it reads.

Kept apart from the report so the list of metrics reads as one table: adding
or regrouping a metric touches only this module, while the arithmetic of a
row (`report`) and the choice of its literature figure (`baseline_match`)
stay unchanged. Pure data: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from spinewatch.baselines.model import BaselineTimepoint
from spinewatch.contracts.vocabulary import (
    ComplicationCategory,
    FollowupTimepoint,
    LeakageImaging,
    LeakageSite,
    PainRelief,
    ProcedureType,
)
from spinewatch.domain.followup.pessimistic import (
    responder_eligible_pessimistic,
    vas_change_pessimistic_series,
)
from spinewatch.domain.followup.schedule import SCHEDULABLE
from spinewatch.domain.outcomes.contribution import (
    ANALGESIC_REPORTED_WEEK_1,
    ANALGESIC_SAME_OR_MORE_WEEK_1,
    LEVELS_ASSESSED_FOR_LEAKAGE,
    LEVELS_WITH_LEAKAGE,
    NEURO_IMPROVED,
    NEURO_OUTCOME_PROCEDURES,
    NEURO_RECOVERED,
    NEURO_STATUS_REPORTED,
    PAIN_AND_NEURO_REPORTED,
    PAIN_RELIEF_AND_NEURO_IMPROVED,
    PAIN_RELIEF_REPORTED,
    PATIENTS,
    PATIENTS_ASSESSED_FOR_LEAKAGE,
    PATIENTS_WITH_COMPLICATION,
    PATIENTS_WITH_LEAKAGE,
    PATIENTS_WITH_SYMPTOMATIC_LEAKAGE,
    PRE_PROCEDURE,
    PVP_ALONE_WITH_NEURO_DEFICIT,
    SUSPECTED_TUMOUR_PROCEDURES,
    SUSPECTED_TUMOUR_WITHOUT_BIOPSY,
    levels_assessed_with,
    levels_leaking_on,
    levels_with_leakage_at,
    pain_relief_tally,
    patients_with,
)

Unit = Literal["treated_level", "patient"]

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

    name: Literal["vas_score", "vas_change", "vas_change_pessimistic"]
    series: str
    timepoint: str


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


# Per-level leakage counted on one modality only, side by side in the report
# (CT finds more than fluoroscopy). No seed states the modality its leakage
# was counted on, so these rows have no comparator of their own; a
# comparator that states one makes the overall row count like with like
# (`like_with_like`).
LEAKAGE_BY_IMAGING: Mapping[str, RateMetric] = {
    imaging.value: RateMetric(
        f"cement_leakage_rate_per_level_{imaging.value}",
        levels_leaking_on(imaging.value),
        levels_assessed_with(imaging.value),
        "treated_level",
        INTRA_PROCEDURE,
        None,
    )
    for imaging in LeakageImaging
    if imaging is not LeakageImaging.NOT_ASSESSED
}
PER_LEVEL_LEAKAGE = "cement_leakage_rate_per_level"


def like_with_like(metric: RateMetric, detection: str | None) -> RateMetric | None:
    """The modality-only metric to count when the comparator states its imaging.

    None when the metric is not per-level leakage or the comparator's
    detection method is not stated: then every assessed level counts, and
    like-with-like cannot be checked.
    """
    if metric.name != PER_LEVEL_LEAKAGE or detection is None:
        return None
    return LEAKAGE_BY_IMAGING.get(detection)


NOT_LIKE_WITH_LIKE = "comparator's detection method not stated: like-with-like cannot be checked"


# A reaction to cement happens during injection; other complications are
# counted over the whole follow-up.
_PERI_PROCEDURAL = {ComplicationCategory.ALLERGIC_OR_HEMODYNAMIC_REACTION}
# Reported elsewhere (with leakage), or with no literature figure to name.
_NOT_ITEMISED = {ComplicationCategory.SYMPTOMATIC_CEMENT_LEAKAGE, ComplicationCategory.OTHER}

RATE_METRICS: tuple[RateMetric, ...] = (
    # Only levels (patients) whose imaging looked for leakage are denominators.
    RateMetric(
        PER_LEVEL_LEAKAGE,
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
    *LEAKAGE_BY_IMAGING.values(),
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
    # Next to each complete-case responder rate of a schedulable timepoint,
    # the same rate with every lost follow-up counted as a non-responder
    # (domain/followup/pessimistic.py adds the denominator to the tally).
    *(
        RateMetric(
            "responder_rate_pessimistic",
            f"responders.{timepoint}",
            responder_eligible_pessimistic(timepoint),
            "patient",
            timepoint,
            None,
            definition_id=RESPONDER_DEFINITION_ID,
        )
        for timepoint in SCHEDULABLE
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

# --- outcomes of the other treatments (seeds 001/002/004) ----------------------
#
# Per patient, over the whole follow-up (latest assessment, see
# `contribution`), so they meet the catalog's undated series figures. One row
# per treatment: each procedure has its own catalog metric names. Seed 001's
# radiotherapy "complete remission / partial remission / no response" does
# not say whether remission is of pain or of the lesion; it is set against
# the pain-relief categories as the nearest recorded outcome (approximate).
OUTCOME_PROCEDURES = tuple(sorted(NEURO_OUTCOME_PROCEDURES))
# (row, procedure) -> the catalog metric holding that treatment's figure.
OUTCOME_CATALOG_METRICS: Mapping[tuple[str, ProcedureType], str] = {
    ("pain_relief_complete_rate", ProcedureType.TRANSARTERIAL_EMBOLIZATION): (
        "complete_pain_resolution_rate"  # seeds 002/004: 3 of 4
    ),
    ("pain_relief_complete_rate", ProcedureType.RADIOTHERAPY): (
        "radiotherapy_complete_remission_rate"  # seed 001: 57% (approximate)
    ),
    ("pain_relief_partial_rate", ProcedureType.RADIOTHERAPY): (
        "radiotherapy_partial_remission_rate"  # seed 001: 32% (approximate)
    ),
    ("pain_relief_none_rate", ProcedureType.RADIOTHERAPY): (
        "radiotherapy_no_response_rate"  # seed 001: 11% (approximate)
    ),
    ("neurological_improvement_rate", ProcedureType.DECOMPRESSION_LAMINECTOMY): (
        "neurological_improvement_rate"  # seed 002: 70%, 7 of 10
    ),
    ("neurological_full_recovery_rate", ProcedureType.DECOMPRESSION_LAMINECTOMY): (
        "full_neurological_recovery_rate"  # seed 004: 11 of 11
    ),
    ("pain_relief_and_neurological_improvement_rate", ProcedureType.DECOMPRESSION_LAMINECTOMY): (
        "pain_relief_and_neurological_improvement_rate"  # seeds 002/004: 7 of 9
    ),
}
# Row name, numerator, denominator.
_OUTCOME_RATES = (
    *(
        (f"pain_relief_{category.value}_rate", pain_relief_tally(category), PAIN_RELIEF_REPORTED)
        for category in PainRelief
    ),
    ("neurological_improvement_rate", NEURO_IMPROVED, NEURO_STATUS_REPORTED),
    ("neurological_full_recovery_rate", NEURO_RECOVERED, NEURO_STATUS_REPORTED),
    (
        "pain_relief_and_neurological_improvement_rate",
        PAIN_RELIEF_AND_NEURO_IMPROVED,
        PAIN_AND_NEURO_REPORTED,
    ),
)
TREATMENT_OUTCOME_METRICS: tuple[RateMetric, ...] = tuple(
    RateMetric(
        name,
        numerator,
        denominator,
        "patient",
        None,
        OUTCOME_CATALOG_METRICS.get((name, procedure)),
        only_for=procedure,
    )
    for procedure in OUTCOME_PROCEDURES
    for name, numerator, denominator in _OUTCOME_RATES
)
RATE_METRICS += TREATMENT_OUTCOME_METRICS

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
    # A lost follow-up counted as no relief (change 0): see domain/followup/pessimistic.py.
    *(
        MeanMetric("vas_change_pessimistic", vas_change_pessimistic_series(timepoint), timepoint)
        for timepoint in SCHEDULABLE
    ),
)
