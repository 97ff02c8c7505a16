"""Per-procedure state: the set of facts received for one procedure.

The record is a grow-only set of facts keyed by `event_id`, and everything
read from it is a pure function of that set. So the order in which events
arrive, and how often, cannot change any metric: a duplicate is a no-op, a
follow-up received before its procedure waits in the record, and a
retraction that overtakes its target still removes it when it lands.
"""

from __future__ import annotations

from dataclasses import dataclass

from spinewatch.contracts import Event
from spinewatch.domain.outcomes.facts import (
    ComplicationFact,
    Fact,
    FollowupFact,
    ProcedureFact,
    RetractionFact,
    fact_of,
)


@dataclass(frozen=True, slots=True)
class LiveView:
    """What a record says once retractions are applied."""

    procedure: ProcedureFact | None
    followups: dict[str, FollowupFact]  # latest per timepoint
    related_complications: frozenset[str]  # categories counted as procedure-related


@dataclass(frozen=True, slots=True)
class ProcedureRecord:
    facts: tuple[Fact, ...] = ()

    def has(self, event_id: bytes) -> bool:
        # Runs once per inbound fact; a record holds a handful of facts.
        for fact in self.facts:  # noqa: SIM110 - any(<genexpr>) is ~3x slower here
            if fact.event_id == event_id:
                return True
        return False

    def live(self) -> LiveView:
        """The procedure as currently known, with its latest follow-ups.

        A correction is a retraction plus a new event, and the two may arrive
        in either order: the latest recorded unretracted version wins, and
        ties on `recorded_at` fall to the event id so every worker picks the
        same one. Retracting every version of the procedure voids the record.
        """
        retracted = {f.target_event_id for f in self.facts if type(f) is RetractionFact}
        procedure: ProcedureFact | None = None
        followups: dict[str, FollowupFact] = {}
        related: set[str] = set()
        for fact in self.facts:
            if fact.event_id in retracted:
                continue
            if type(fact) is ProcedureFact:
                if procedure is None or _newer(fact, procedure):
                    procedure = fact
            elif type(fact) is FollowupFact:
                current = followups.get(fact.timepoint)
                if current is None or _newer(fact, current):
                    followups[fact.timepoint] = fact
            elif type(fact) is ComplicationFact and fact.procedure_related:
                related.add(fact.category)
        return LiveView(procedure, followups, frozenset(related))


def _newer(a: ProcedureFact | FollowupFact, b: ProcedureFact | FollowupFact) -> bool:
    return (a.recorded_at_us, a.event_id) > (b.recorded_at_us, b.event_id)


def apply_fact(record: ProcedureRecord, fact: Fact) -> ProcedureRecord:
    """The record with `fact` added; the same record if it was already there."""
    if record.has(fact.event_id):
        return record
    return ProcedureRecord((*record.facts, fact))


def apply_event(record: ProcedureRecord, event: Event) -> ProcedureRecord:
    return apply_fact(record, fact_of(event))
