"""What one procedure contributes to its cohort's metrics, as integer tallies.

Every metric is a ratio or a moment of tallies summed over procedures. The
tallies are integers (VAS in thousandths of a point), so adding and
subtracting contributions is exact and the order of updates cannot leave a
rounding residue: an aggregate maintained incrementally equals one rebuilt
from scratch, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spinewatch.contracts import (
    AnalgesicUse,
    ComplicationCategory,
    FollowupTimepoint,
    Indication,
    NeurologicalStatus,
    PainRelief,
    ProcedureType,
)
from spinewatch.domain.outcomes.facts import (
    LEVELS_ASSESSED_FOR_LEAKAGE,
    LEVELS_TREATED,
    LEVELS_WITH_LEAKAGE,
    NEURO_DEFICIT_AT_PRESENTATION,
    NEURO_OUTCOME_PROCEDURES,
    PATIENTS_ASSESSED_FOR_LEAKAGE,
    PATIENTS_WITH_LEAKAGE,
    PVP_ALONE_WITH_NEURO_DEFICIT,
    SUSPECTED_TUMOUR_PROCEDURES,
    SUSPECTED_TUMOUR_WITHOUT_BIOPSY,
    VAS_SCALE,
    FollowupFact,
    ProcedureFact,
    RetractionFact,
    levels_assessed_with,
    levels_leaking_on,
    levels_with_leakage_at,
)
from spinewatch.domain.outcomes.records import LiveView, ProcedureRecord

__all__ = [
    "ANALGESIC_REPORTED_WEEK_1",
    "ANALGESIC_SAME_OR_MORE_WEEK_1",
    "LEVELS_ASSESSED_FOR_LEAKAGE",
    "LEVELS_TREATED",
    "LEVELS_WITH_LEAKAGE",
    "NEURO_DEFICIT_AT_PRESENTATION",
    "NEURO_IMPROVED",
    "NEURO_OUTCOME_PROCEDURES",
    "NEURO_RECOVERED",
    "NEURO_STATUS_REPORTED",
    "PAIN_AND_NEURO_REPORTED",
    "PAIN_RELIEF_AND_NEURO_IMPROVED",
    "PAIN_RELIEF_REPORTED",
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
    "aggregate_key",
    "contribution_of",
    "followup_delta",
    "keyed_followup_delta",
    "levels_assessed_with",
    "levels_leaking_on",
    "levels_with_leakage_at",
    "pain_relief_tally",
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
    # The (procedure type, indication) values baselines and drift charts are
    # stratified by, kept here because the charts read it for every changed
    # procedure and an enum's `.value` is a Python-level property.
    stratum: tuple[str, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stratum", (self.procedure_type.value, self.indication.value))


# Aggregates are kept per cohort and operator; site and roll-up views sum them.
AggregateKey = tuple[CohortKey, str | None]


@dataclass(frozen=True, slots=True)
class Contribution:
    key: AggregateKey  # shared by every procedure of the cohort and operator
    tally: Tally  # never shared with totals
    # Clinical time of the procedure: orders the site's cases on drift charts.
    occurred_at_us: int = 0

    @property
    def cohort(self) -> CohortKey:
        return self.key[0]

    @property
    def operator_ref(self) -> str | None:
        return self.key[1]


def contribution_of(record: ProcedureRecord) -> Contribution | None:
    """None until the procedure is known (or after it was retracted).

    Runs once per touched procedure per batch, so it fills one dict with
    precomputed tally names instead of chaining generators.
    """
    view = record.live()
    procedure = view.procedure
    if procedure is None:
        return None
    tally: Tally = {PATIENTS: 1}
    for name, value in procedure.intrinsic:
        tally[name] = tally.get(name, 0) + value
    _count_complications(tally, view, procedure.symptomatic_leak)
    _count_pain(tally, view, procedure.pre_vas)
    if procedure.procedure_type in _OUTCOME_PROCEDURES:
        _count_treatment_outcomes(tally, view)
    return Contribution(_aggregate_key(procedure), tally, procedure.occurred_at_us)


_AGGREGATE_KEYS: dict[tuple[str, str, str, str | None], AggregateKey] = {}


def _aggregate_key(procedure: ProcedureFact) -> AggregateKey:
    return aggregate_key(
        procedure.site_id, procedure.procedure_type, procedure.indication, procedure.operator_ref
    )


def aggregate_key(
    site_id: str, procedure_type: str, indication: str, operator_ref: str | None
) -> AggregateKey:
    # One key object per cohort and operator, shared: cheaper than building
    # enums per procedure, and the totals dict then hashes a cached object.
    raw = (site_id, procedure_type, indication, operator_ref)
    key = _AGGREGATE_KEYS.get(raw)
    if key is None:
        cohort = CohortKey(raw[0], ProcedureType(raw[1]), Indication(raw[2]))
        key = _AGGREGATE_KEYS[raw] = (cohort, raw[3])
    return key


_SYMPTOMATIC = ComplicationCategory.SYMPTOMATIC_CEMENT_LEAKAGE.value
_PATIENTS_WITH = {category.value: patients_with(category) for category in ComplicationCategory}


def _count_complications(tally: Tally, view: LiveView, symptomatic_leak: bool) -> None:
    related = view.related_complications
    if symptomatic_leak:
        related = related | {_SYMPTOMATIC}
    tally[PATIENTS_WITH_SYMPTOMATIC_LEAKAGE] = int(_SYMPTOMATIC in related)
    tally[PATIENTS_WITH_COMPLICATION] = int(bool(related))
    for category in related:
        tally[_PATIENTS_WITH[category]] = 1


@dataclass(frozen=True, slots=True)
class _TimepointNames:
    vas: tuple[str, str, str]
    change: tuple[str, str, str]
    eligible: str
    responders: str


_TIMEPOINTS = {
    timepoint.value: _TimepointNames(
        vas_moments(f"vas.{timepoint.value}"),
        vas_moments(f"vas_change.{timepoint.value}"),
        f"responder_eligible.{timepoint.value}",
        f"responders.{timepoint.value}",
    )
    for timepoint in FollowupTimepoint
}
_PRE = vas_moments(PRE_PROCEDURE)
_WEEK_1 = FollowupTimepoint.WEEK_1.value
_LESS = AnalgesicUse.LESS.value


def _count_pain(tally: Tally, view: LiveView, pre: int | None) -> None:
    if pre is not None:
        _add_moments(tally, _PRE, pre)
    for followup in view.followups.values():
        _count_followup(tally, followup, pre)


def _count_followup(tally: Tally, followup: FollowupFact, pre: int | None) -> None:
    """The tallies one live follow-up adds to its procedure's contribution."""
    if followup.timepoint == _WEEK_1 and followup.analgesic_use is not None:
        tally[ANALGESIC_REPORTED_WEEK_1] = 1
        tally[ANALGESIC_SAME_OR_MORE_WEEK_1] = int(followup.analgesic_use != _LESS)
    vas = followup.vas
    if vas is None:
        return
    names = _TIMEPOINTS[followup.timepoint]
    _add_moments(tally, names.vas, vas)
    if pre is None:
        return
    # Paired change from the same patient's pre-procedure score.
    _add_moments(tally, names.change, vas - pre)
    if pre > 0:
        tally[names.eligible] = 1
        tally[names.responders] = int((pre - vas) >= RESPONDER_REDUCTION * pre)


def followup_delta(record: ProcedureRecord) -> Tally | None:
    keyed = keyed_followup_delta(record)
    return None if keyed is None else keyed[1]


def keyed_followup_delta(record: ProcedureRecord) -> tuple[AggregateKey, Tally] | None:
    """What the record's newest fact, a follow-up, adds to its contribution, and where.

    The common update (a follow-up for a known procedure) changes a
    contribution by that follow-up's tallies alone, provided nothing in the
    record can make the live view differ: a single procedure version, no
    retraction, and no other follow-up at the same timepoint. Then the
    delta's names are all new to the contribution, and old tally + delta
    equals `contribution_of(record).tally`. None when the conditions do not
    hold: the caller then recomputes from scratch.
    """
    followup = record.facts[-1]
    if type(followup) is not FollowupFact:
        return None
    procedure: ProcedureFact | None = None
    for fact in record.facts[:-1]:
        kind = type(fact)
        if kind is ProcedureFact:
            if procedure is not None:
                return None
            procedure = fact  # type: ignore[assignment]
        elif kind is RetractionFact or (
            kind is FollowupFact and fact.timepoint == followup.timepoint  # type: ignore[union-attr]
        ):
            return None
    if procedure is None:
        return None
    if procedure.procedure_type in _OUTCOME_PROCEDURES and (
        followup.neurological_status is not None or followup.pain_relief is not None
    ):
        return None  # may replace another visit's outcome (latest assessment wins)
    delta: Tally = {}
    _count_followup(delta, followup, procedure.pre_vas)
    return _aggregate_key(procedure), delta


def _add_moments(tally: Tally, names: tuple[str, str, str], scaled: int) -> None:
    # Each series appears once per procedure: set, not add.
    n, total, squares = names
    tally[n] = 1
    tally[total] = scaled
    tally[squares] = scaled * scaled


# --- outcomes of the other treatments (seeds 002/004, follow-up version 2) ------
#
# Seeds 002/004 report a series' result, not a visit's: "7 of 9 patients
# achieved pain relief and neurological improvement", "3 of 4 ... complete
# resolution of back pain", seed 001 "complete remission in 57%". So each
# patient counts once, with the latest assessment that reports the measure
# (latest by days since procedure, then by recording). Neurological
# improvement is counted only for patients who presented with a deficit, as
# in the seeds ("70% of patients with deficits improve after decompression"):
# a patient without one cannot improve, and one whose procedure fact predates
# the deficit tally (no NEURO_DEFICIT_AT_PRESENTATION) is left out rather
# than guessed.

PAIN_RELIEF_REPORTED = "pain_relief_reported"
NEURO_STATUS_REPORTED = "neurological_status_reported.with_deficit"
NEURO_IMPROVED = "neurological_improved.with_deficit"
NEURO_RECOVERED = "neurological_recovered.with_deficit"
PAIN_AND_NEURO_REPORTED = "pain_and_neurological_status_reported.with_deficit"
PAIN_RELIEF_AND_NEURO_IMPROVED = "pain_relief_and_neurological_improvement.with_deficit"


def pain_relief_tally(category: PainRelief | str) -> str:
    return f"pain_relief.{PainRelief(category).value}"


# Where these outcomes are reported (report_metrics.OUTCOME_PROCEDURES): other
# cohorts keep neither the tallies nor the cost of counting them.
_OUTCOME_PROCEDURES = frozenset(procedure.value for procedure in NEURO_OUTCOME_PROCEDURES)
_PAIN_RELIEF = {category.value: pain_relief_tally(category) for category in PainRelief}
_NO_RELIEF = PainRelief.NONE.value
_IMPROVEMENT = frozenset(s.value for s in NeurologicalStatus if s.counts_as_improvement)
_RECOVERED = NeurologicalStatus.RECOVERED.value
# Nominal day of a fixed timepoint, to order visits; `final` and `other`
# carry their own days since procedure.
_NOMINAL_DAY = {
    FollowupTimepoint.POST_PROCEDURE.value: 1,
    FollowupTimepoint.WEEK_1.value: 7,
    FollowupTimepoint.MONTH_1.value: 30,
    FollowupTimepoint.MONTH_3.value: 91,
    FollowupTimepoint.MONTH_6.value: 182,
    FollowupTimepoint.MONTH_12.value: 365,
}


def _visit_order(followup: FollowupFact) -> tuple[int, int, bytes]:
    day = followup.days_since_procedure
    if day is None:
        day = _NOMINAL_DAY.get(followup.timepoint, 0)
    return (day, followup.recorded_at_us, followup.event_id)


def _count_treatment_outcomes(tally: Tally, view: LiveView) -> None:
    pain: FollowupFact | None = None
    neuro: FollowupFact | None = None
    for followup in view.followups.values():
        if followup.pain_relief is not None and (
            pain is None or _visit_order(followup) > _visit_order(pain)
        ):
            pain = followup
        if followup.neurological_status is not None and (
            neuro is None or _visit_order(followup) > _visit_order(neuro)
        ):
            neuro = followup
    if pain is not None and pain.pain_relief is not None:
        tally[PAIN_RELIEF_REPORTED] = 1
        tally[_PAIN_RELIEF[pain.pain_relief]] = 1
    if neuro is None or neuro.neurological_status is None:
        return
    if tally.get(NEURO_DEFICIT_AT_PRESENTATION) != 1:
        return
    improved = neuro.neurological_status in _IMPROVEMENT
    tally[NEURO_STATUS_REPORTED] = 1
    tally[NEURO_IMPROVED] = int(improved)
    tally[NEURO_RECOVERED] = int(neuro.neurological_status == _RECOVERED)
    if pain is not None and pain.pain_relief is not None:
        tally[PAIN_AND_NEURO_REPORTED] = 1
        tally[PAIN_RELIEF_AND_NEURO_IMPROVED] = int(improved and pain.pain_relief != _NO_RELIEF)
