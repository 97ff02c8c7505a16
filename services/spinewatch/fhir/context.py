"""What a mapping needs from its caller, and what it gives back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from spinewatch.contracts.registry import Event
from spinewatch.errors import FieldError
from spinewatch.fhir.pseudonyms import MIN_KEY_BYTES


@dataclass(frozen=True)
class FhirContext:
    """The authenticated sender and the secrets a mapping runs with.

    `source` and `site_id` follow the contract patterns (SourceSystem,
    SiteId); a value that does not is reported on every event, by the
    contract. The key is kept out of `repr`, so a logged context shows none.
    """

    source: str
    site_id: str
    pseudonym_key: bytes = field(repr=False)
    received_at: datetime

    def __post_init__(self) -> None:
        # Configuration errors of the caller, not bad input: fail at once.
        if len(self.pseudonym_key) < MIN_KEY_BYTES:
            raise ValueError(f"pseudonym_key must hold at least {MIN_KEY_BYTES} bytes")
        if self.received_at.utcoffset() is None:
            raise ValueError("received_at must carry a timezone")
        if self.received_at.utcoffset() != timedelta(0):
            raise ValueError("received_at must be UTC")


@dataclass(frozen=True)
class FhirReject:
    """One document part that produced no event, and why.

    `entry` is a position ("entry[3] (Observation)", "resource (Procedure)",
    "document"), never a FHIR id, reference or value; the errors' messages
    never echo a value either.
    """

    entry: str
    errors: tuple[FieldError, ...]


@dataclass(frozen=True)
class FhirMapping:
    """Validated contract events (procedures first, then the rest in document order)."""

    events: tuple[Event, ...]
    rejects: tuple[FhirReject, ...]
    # procedure_id -> performed start, for every Procedure mapped to a
    # `procedure.performed`, so a later standalone Observation can be placed.
    procedures_performed: Mapping[UUID, datetime]
