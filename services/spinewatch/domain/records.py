"""Per-procedure state: the set of events received for one procedure.

The record is a grow-only set of events keyed by `event_id`, and everything
read from it is a pure function of that set. So the order in which events
arrive, and how often, cannot change any metric: a duplicate is a no-op, a
follow-up received before its procedure waits in the record, and a
retraction that overtakes its target still removes it when it lands.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from uuid import UUID

from spinewatch.contracts import (
    ComplicationReported,
    Event,
    EventRetracted,
    FollowupRecorded,
    FollowupTimepoint,
    ProcedurePerformed,
)


@dataclass(frozen=True, slots=True)
class ProcedureRecord:
    procedures: tuple[ProcedurePerformed, ...] = ()
    followups: tuple[FollowupRecorded, ...] = ()
    complications: tuple[ComplicationReported, ...] = ()
    retractions: tuple[EventRetracted, ...] = ()

    @property
    def seen(self) -> frozenset[UUID]:
        return frozenset(
            e.event_id
            for group in (self.procedures, self.followups, self.complications, self.retractions)
            for e in group
        )

    @property
    def retracted(self) -> frozenset[UUID]:
        return frozenset(r.target_event_id for r in self.retractions)

    @property
    def procedure(self) -> ProcedurePerformed | None:
        """The procedure as currently known: the latest recorded, unretracted version.

        A correction is a retraction plus a new event, and the two may arrive
        in either order; ties on `recorded_at` fall to the event id so every
        worker picks the same one.
        """
        live = [p for p in self.procedures if p.event_id not in self.retracted]
        return max(live, key=lambda p: (p.recorded_at, str(p.event_id)), default=None)

    def live_complications(self) -> tuple[ComplicationReported, ...]:
        return tuple(c for c in self.complications if c.event_id not in self.retracted)

    def followup_at(self, timepoint: FollowupTimepoint) -> FollowupRecorded | None:
        """The latest recorded, unretracted follow-up at a timepoint."""
        live = [
            f
            for f in self.followups
            if f.timepoint is timepoint and f.event_id not in self.retracted
        ]
        return max(live, key=lambda f: (f.recorded_at, str(f.event_id)), default=None)


def apply_event(record: ProcedureRecord, event: Event) -> ProcedureRecord:
    """The record with `event` added; the same record if it was already there."""
    if event.event_id in record.seen:
        return record
    match event:
        case ProcedurePerformed():
            return replace(record, procedures=(*record.procedures, event))
        case FollowupRecorded():
            return replace(record, followups=(*record.followups, event))
        case ComplicationReported():
            return replace(record, complications=(*record.complications, event))
        case EventRetracted():
            return replace(record, retractions=(*record.retractions, event))
    raise AssertionError(f"unhandled event type {type(event).__name__}")  # pragma: no cover
