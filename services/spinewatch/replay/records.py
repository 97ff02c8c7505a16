"""What a replay moves: records read from a file, and what became of each.

A record is one event as read (or the reason it could not be built), with
its ordinal in the file and a position a person can find again ("line 12",
"row 5", "item 3", "entry 4"). Resumption counts records by ordinal, so
every reader must yield the same records in the same order for the same
bytes (they are pure functions of the file).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum

from spinewatch.errors import FieldError


@dataclass(frozen=True, slots=True)
class Record:
    index: int  # 0-based ordinal among this file's records
    position: str  # where a person finds it: "line 12", "row 5", "item 3", "entry 4"
    payload: bytes | None  # the event as JSON; None when the reader could not build one
    errors: tuple[FieldError, ...] = ()  # why the reader could not build it


class Status(StrEnum):
    """The final outcome of one record (the gateway's words, where it answers)."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # the event (same event_id) is already held
    CONFLICT = "conflict"  # the event_id is held with different content
    REJECTED = "rejected"  # breaks its contract
    FORBIDDEN = "forbidden"  # the credential may not write for this site

    @property
    def stored(self) -> bool:
        """The event id is held downstream after this outcome."""
        return self in (Status.ACCEPTED, Status.DUPLICATE, Status.CONFLICT)

    @property
    def failed(self) -> bool:
        """Goes to the rejects file and makes the exit code 1."""
        return self in (Status.CONFLICT, Status.REJECTED, Status.FORBIDDEN)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A valid event on its way to a sink."""

    payload: bytes  # the event's JSON, as read
    key: bytes  # the Kafka key: its procedure_id's 16 bytes (a procedure's events keep order)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    errors: tuple[FieldError, ...] = ()
    reason: str | None = None  # the gateway's word for a conflict or a refusal


@dataclass(slots=True)
class Counts:
    accepted: int = 0
    duplicate: int = 0
    conflict: int = 0
    rejected: int = 0
    forbidden: int = 0
    # Of `accepted`: records sent by an interrupted run whose answer was
    # lost, answered "duplicate" when resent (see replay/run.py).
    resent: int = field(default=0)

    def add(self, status: Status) -> None:
        setattr(self, status.value, getattr(self, status.value) + 1)

    def merge(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def records(self) -> int:
        return self.accepted + self.duplicate + self.conflict + self.rejected + self.forbidden

    @property
    def failed(self) -> int:
        return self.conflict + self.rejected + self.forbidden

    def as_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, int]) -> Counts:
        return cls(**{f.name: int(data.get(f.name, 0)) for f in fields(cls)})
