"""What one procedure contributes to its cohort's metrics, as integer tallies.

Every metric is a ratio or a moment of tallies summed over procedures. The
tallies are integers (VAS in thousandths of a point), so adding and
subtracting contributions is exact and the order of updates cannot leave a
rounding residue: an aggregate maintained incrementally equals one rebuilt
from scratch, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from spinewatch.contracts import (
    AnalgesicUse,
    ComplicationCategory,
    FollowupTimepoint,
    Indication,
    LeakageImaging,
    ProcedurePerformed,
    ProcedureType,
)
from spinewatch.domain.records import ProcedureRecord

Tally = dict[str, int]

VAS_SCALE = 1000  # tallies hold VAS in thousandths, so sums stay integers
RESPONDER_REDUCTION = 0.5  # seed 003: "a good result may be a 50% pain reduction"

PATIENTS = "patients"
LEVELS_TREATED = "levels_treated"
LEVELS_ASSESSED_FOR_LEAKAGE = "levels_assessed_for_leakage"
LEVELS_WITH_LEAKAGE = "levels_with_leakage"
PATIENTS_ASSESSED_FOR_LEAKAGE = "patients_assessed_for_leakage"
PATIENTS_WITH_LEAKAGE = "patients_with_leakage"
PATIENTS_WITH_SYMPTOMATIC_LEAKAGE = "patients_with_symptomatic_leakage"
PATIENTS_WITH_COMPLICATION = "patients_with_complication"
PVP_ALONE_WITH_NEURO_DEFICIT = "pvp_alone_with_neurological_deficit"
SUSPECTED_TUMOUR_PROCEDURES = "suspected_tumour_procedures"
SUSPECTED_TUMOUR_WITHOUT_BIOPSY = "suspected_tumour_without_biopsy"
ANALGESIC_REPORTED_WEEK_1 = "analgesic_reported.week_1"
ANALGESIC_SAME_OR_MORE_WEEK_1 = "analgesic_same_or_more.week_1"
PRE_PROCEDURE = "pre_procedure"


def levels_with_leakage_at(site: str) -> str:
    return f"{LEVELS_WITH_LEAKAGE}.{site}"


def patients_with(category: ComplicationCategory) -> str:
    return f"{PATIENTS_WITH_COMPLICATION}.{category.value}"


def vas_moments(series: str) -> tuple[str, str, str]:
    """Tally names of n, sum and sum of squares for a VAS series."""
    return (f"{series}.n", f"{series}.sum", f"{series}.sumsq")


@dataclass(frozen=True, slots=True)
class CohortKey:
    site_id: str
    procedure_type: ProcedureType
    indication: Indication


@dataclass(frozen=True, slots=True)
class Contribution:
    cohort: CohortKey
    operator_ref: str | None
    tally: Mapping[str, int]


def contribution_of(record: ProcedureRecord) -> Contribution | None:
    """None until the procedure is known (or after it was retracted)."""
    procedure = record.procedure
    if procedure is None:
        return None
    tally: Tally = {PATIENTS: 1}
    _count(tally, _leakage(procedure))
    _count(tally, _complications(record, procedure))
    _count(tally, _appropriateness(procedure))
    _count(tally, _pain(record, procedure))
    cohort = CohortKey(procedure.site_id, procedure.procedure_type, procedure.indication)
    return Contribution(cohort, procedure.operator_ref, tally)


def _count(tally: Tally, items: Iterable[tuple[str, int]]) -> None:
    for name, value in items:
        tally[name] = tally.get(name, 0) + value


def _leakage(procedure: ProcedurePerformed) -> Iterable[tuple[str, int]]:
    yield LEVELS_TREATED, len(procedure.levels)
    assessed = [
        level
        for level in procedure.levels
        if level.leakage_imaging not in (None, LeakageImaging.NOT_ASSESSED)
    ]
    if not assessed:
        return
    leaked = [level for level in assessed if level.leakages]
    yield LEVELS_ASSESSED_FOR_LEAKAGE, len(assessed)
    yield LEVELS_WITH_LEAKAGE, len(leaked)
    for level in leaked:
        for leak in level.leakages:
            yield levels_with_leakage_at(leak.site.value), 1
    yield PATIENTS_ASSESSED_FOR_LEAKAGE, 1
    yield PATIENTS_WITH_LEAKAGE, int(bool(leaked))


def _complications(
    record: ProcedureRecord, procedure: ProcedurePerformed
) -> Iterable[tuple[str, int]]:
    related = {
        c.category for c in record.live_complications() if c.relatedness.counts_as_procedure_related
    }
    symptomatic_leak = any(leak.symptomatic for lv in procedure.levels for leak in lv.leakages)
    if symptomatic_leak:
        related.add(ComplicationCategory.SYMPTOMATIC_CEMENT_LEAKAGE)
    yield (
        PATIENTS_WITH_SYMPTOMATIC_LEAKAGE,
        int(ComplicationCategory.SYMPTOMATIC_CEMENT_LEAKAGE in related),
    )
    yield PATIENTS_WITH_COMPLICATION, int(bool(related))
    for category in related:
        yield patients_with(category), 1


def _appropriateness(procedure: ProcedurePerformed) -> Iterable[tuple[str, int]]:
    """Pitfalls the seeds name, each with an expected rate of zero.

    Seeds 002/004: do not rely on vertebroplasty alone for a neurological
    deficit. Seed 003: biopsy before VP is determinant when a tumour is
    suspected.
    """
    if procedure.procedure_type is ProcedureType.PVP:
        yield PVP_ALONE_WITH_NEURO_DEFICIT, int(procedure.neurological_deficit_at_presentation)
    if procedure.indication.is_suspected_tumour:
        yield SUSPECTED_TUMOUR_PROCEDURES, 1
        yield SUSPECTED_TUMOUR_WITHOUT_BIOPSY, int(not procedure.biopsy_taken)


def _pain(record: ProcedureRecord, procedure: ProcedurePerformed) -> Iterable[tuple[str, int]]:
    pre = procedure.pre_vas
    if pre is not None:
        yield from _moments(PRE_PROCEDURE, pre)
    for timepoint in FollowupTimepoint:
        followup = record.followup_at(timepoint)
        if followup is None:
            continue
        if timepoint is FollowupTimepoint.WEEK_1 and followup.analgesic_use is not None:
            yield ANALGESIC_REPORTED_WEEK_1, 1
            yield (
                ANALGESIC_SAME_OR_MORE_WEEK_1,
                int(followup.analgesic_use is not AnalgesicUse.LESS),
            )
        if followup.vas is None:
            continue
        yield from _moments(f"vas.{timepoint.value}", followup.vas)
        if pre is None:
            continue
        # Paired change from the same patient's pre-procedure score.
        yield from _moments(f"vas_change.{timepoint.value}", followup.vas - pre)
        if pre > 0:
            yield f"responder_eligible.{timepoint.value}", 1
            responded = (pre - followup.vas) >= RESPONDER_REDUCTION * pre
            yield f"responders.{timepoint.value}", int(responded)


def _moments(series: str, value: float) -> Iterable[tuple[str, int]]:
    scaled = round(value * VAS_SCALE)
    n, total, squares = vas_moments(series)
    yield n, 1
    yield total, scaled
    yield squares, scaled * scaled
