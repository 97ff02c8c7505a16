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
    ProcedureType,
)
from spinewatch.domain.facts import (
    LEVELS_ASSESSED_FOR_LEAKAGE,
    LEVELS_TREATED,
    LEVELS_WITH_LEAKAGE,
    PATIENTS_ASSESSED_FOR_LEAKAGE,
    PATIENTS_WITH_LEAKAGE,
    PVP_ALONE_WITH_NEURO_DEFICIT,
    SUSPECTED_TUMOUR_PROCEDURES,
    SUSPECTED_TUMOUR_WITHOUT_BIOPSY,
    VAS_SCALE,
    levels_with_leakage_at,
)
from spinewatch.domain.records import LiveView, ProcedureRecord

__all__ = [
    "ANALGESIC_REPORTED_WEEK_1",
    "ANALGESIC_SAME_OR_MORE_WEEK_1",
    "LEVELS_ASSESSED_FOR_LEAKAGE",
    "LEVELS_TREATED",
    "LEVELS_WITH_LEAKAGE",
    "PATIENTS",
    "PATIENTS_ASSESSED_FOR_LEAKAGE",
    "PATIENTS_WITH_COMPLICATION",
    "PATIENTS_WITH_LEAKAGE",
    "PATIENTS_WITH_SYMPTOMATIC_LEAKAGE",
    "PRE_PROCEDURE",
    "PVP_ALONE_WITH_NEURO_DEFICIT",
    "SUSPECTED_TUMOUR_PROCEDURES",
    "SUSPECTED_TUMOUR_WITHOUT_BIOPSY",
    "VAS_SCALE",
    "AggregateKey",
    "CohortKey",
    "Contribution",
    "Tally",
    "contribution_of",
    "levels_with_leakage_at",
    "patients_with",
    "vas_moments",
]

Tally = dict[str, int]

RESPONDER_REDUCTION = 0.5  # seed 003: "a good result may be a 50% pain reduction"

PATIENTS = "patients"
PATIENTS_WITH_SYMPTOMATIC_LEAKAGE = "patients_with_symptomatic_leakage"
PATIENTS_WITH_COMPLICATION = "patients_with_complication"
ANALGESIC_REPORTED_WEEK_1 = "analgesic_reported.week_1"
ANALGESIC_SAME_OR_MORE_WEEK_1 = "analgesic_same_or_more.week_1"
PRE_PROCEDURE = "pre_procedure"


def patients_with(category: ComplicationCategory | str) -> str:
    return f"{PATIENTS_WITH_COMPLICATION}.{ComplicationCategory(category).value}"


def vas_moments(series: str) -> tuple[str, str, str]:
    """Tally names of n, sum and sum of squares for a VAS series."""
    return (f"{series}.n", f"{series}.sum", f"{series}.sumsq")


@dataclass(frozen=True, slots=True)
class CohortKey:
    site_id: str
    procedure_type: ProcedureType
    indication: Indication


# Aggregates are kept per cohort and operator; site and roll-up views sum them.
AggregateKey = tuple[CohortKey, str | None]


@dataclass(frozen=True, slots=True)
class Contribution:
    cohort: CohortKey
    operator_ref: str | None
    tally: Mapping[str, int]

    @property
    def key(self) -> AggregateKey:
        return (self.cohort, self.operator_ref)


def contribution_of(record: ProcedureRecord) -> Contribution | None:
    """None until the procedure is known (or after it was retracted)."""
    view = record.live()
    procedure = view.procedure
    if procedure is None:
        return None
    tally: Tally = {PATIENTS: 1}
    _count(tally, procedure.intrinsic)
    _count(tally, _complications(view, procedure.symptomatic_leak))
    _count(tally, _pain(view, procedure.pre_vas))
    cohort = CohortKey(
        procedure.site_id,
        ProcedureType(procedure.procedure_type),
        Indication(procedure.indication),
    )
    return Contribution(cohort, procedure.operator_ref, tally)


def _count(tally: Tally, items: Iterable[tuple[str, int]]) -> None:
    for name, value in items:
        tally[name] = tally.get(name, 0) + value


def _complications(view: LiveView, symptomatic_leak: bool) -> Iterable[tuple[str, int]]:
    related = set(view.related_complications)
    if symptomatic_leak:
        related.add(ComplicationCategory.SYMPTOMATIC_CEMENT_LEAKAGE.value)
    yield (
        PATIENTS_WITH_SYMPTOMATIC_LEAKAGE,
        int(ComplicationCategory.SYMPTOMATIC_CEMENT_LEAKAGE.value in related),
    )
    yield PATIENTS_WITH_COMPLICATION, int(bool(related))
    for category in related:
        yield f"{PATIENTS_WITH_COMPLICATION}.{category}", 1


def _pain(view: LiveView, pre: int | None) -> Iterable[tuple[str, int]]:
    if pre is not None:
        yield from _moments(PRE_PROCEDURE, pre)
    for timepoint, followup in view.followups.items():
        if timepoint == FollowupTimepoint.WEEK_1.value and followup.analgesic_use is not None:
            yield ANALGESIC_REPORTED_WEEK_1, 1
            yield (
                ANALGESIC_SAME_OR_MORE_WEEK_1,
                int(followup.analgesic_use != AnalgesicUse.LESS.value),
            )
        if followup.vas is None:
            continue
        yield from _moments(f"vas.{timepoint}", followup.vas)
        if pre is None:
            continue
        # Paired change from the same patient's pre-procedure score.
        yield from _moments(f"vas_change.{timepoint}", followup.vas - pre)
        if pre > 0:
            yield f"responder_eligible.{timepoint}", 1
            responded = (pre - followup.vas) >= RESPONDER_REDUCTION * pre
            yield f"responders.{timepoint}", int(responded)


def _moments(series: str, scaled: int) -> Iterable[tuple[str, int]]:
    n, total, squares = vas_moments(series)
    yield n, 1
    yield total, scaled
    yield squares, scaled * scaled
