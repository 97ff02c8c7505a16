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
    LeakageSite,
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
    PATIENTS,
    PATIENTS_ASSESSED_FOR_LEAKAGE,
    PATIENTS_WITH_COMPLICATION,
    PATIENTS_WITH_LEAKAGE,
    PATIENTS_WITH_SYMPTOMATIC_LEAKAGE,
    PRE_PROCEDURE,
    PVP_ALONE_WITH_NEURO_DEFICIT,
    SUSPECTED_TUMOUR_PROCEDURES,
    SUSPECTED_TUMOUR_WITHOUT_BIOPSY,
    levels_with_leakage_at,
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
