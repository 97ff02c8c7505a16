"""Drift charts as a pure function of a site's procedure records.

A chart must survive redelivery and restart exactly like every other
metric, so it is never updated in place from the stream: it is the fold of
`observe` over the site's cases in clinical order (procedure time, then
procedure id), each case's outcome read from its record's contribution and
its expected risk from the catalog stratum of its procedure and indication
(risk adjustment). Rebuilding from the same records gives the same chart,
signals and change points included, whatever order the events came in.

An outcome that becomes known later (a complication reported weeks after
the procedure) changes an earlier case; recomputing the fold from the
records takes that into account by construction. The engine decides how
often to fold (on settling); this module only defines what the chart is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from spinewatch.domain.drift.cusum import ChartState, new_chart, observe
from spinewatch.domain.outcomes.contribution import (
    LEVELS_ASSESSED_FOR_LEAKAGE,
    LEVELS_WITH_LEAKAGE,
    PATIENTS_WITH_COMPLICATION,
    contribution_of,
)
from spinewatch.domain.outcomes.records import ProcedureRecord

Stratum = tuple[str, str]  # (procedure type, indication)


@dataclass(frozen=True, slots=True)
class ChartSpec:
    """One monitored metric: which tallies are a case's events and trials."""

    metric: str
    events_tally: str
    trials_tally: str | None  # None: one trial per patient
    odds_ratio: float
    limit: float


LEAKAGE_PER_LEVEL = "cement_leakage_rate_per_level"
COMPLICATION_PER_PATIENT = "complication_rate"


def leakage_spec(odds_ratio: float, limit: float) -> ChartSpec:
    return ChartSpec(
        LEAKAGE_PER_LEVEL, LEVELS_WITH_LEAKAGE, LEVELS_ASSESSED_FOR_LEAKAGE, odds_ratio, limit
    )


def complication_spec(odds_ratio: float, limit: float) -> ChartSpec:
    return ChartSpec(COMPLICATION_PER_PATIENT, PATIENTS_WITH_COMPLICATION, None, odds_ratio, limit)


@dataclass(frozen=True, slots=True)
class Case:
    occurred_at_us: int
    procedure_id: bytes
    stratum: Stratum
    tally: Mapping[str, int]


def cases_of(records: Mapping[bytes, ProcedureRecord]) -> list[Case]:
    """The site's known procedures in clinical order (voided records are not cases)."""
    cases = []
    for procedure_id, record in records.items():
        contribution = contribution_of(record)
        procedure = record.live().procedure
        if contribution is None or procedure is None:
            continue
        stratum = (procedure.procedure_type, procedure.indication)
        cases.append(Case(procedure.occurred_at_us, procedure_id, stratum, contribution.tally))
    cases.sort(key=lambda case: (case.occurred_at_us, case.procedure_id))
    return cases


def fold_chart(
    spec: ChartSpec, cases: Iterable[Case], expected_risk: Mapping[Stratum, float]
) -> ChartState:
    """The chart after every case whose stratum has a baseline (others are not charted)."""
    state = new_chart(spec.odds_ratio, spec.limit)
    for case in cases:
        p = expected_risk.get(case.stratum)
        if p is None:
            continue  # no literature figure for this stratum: nothing to compare with
        trials = 1 if spec.trials_tally is None else case.tally.get(spec.trials_tally, 0)
        if trials == 0:
            continue  # e.g. no level imaged for leakage: not a case of this chart
        events = min(case.tally.get(spec.events_tally, 0), trials)
        state = observe(state, events, trials, p)
    return state
