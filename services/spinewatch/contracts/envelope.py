"""The envelope every event carries.

`event_id` is the idempotency key: delivery is at least once, so consumers
must treat a second event with the same id as the same event. `occurred_at`
is clinical time (when the procedure or visit happened); `recorded_at` is
when the source system recorded it. Both must carry a timezone and lie in
[1984-01-01T00:00:00Z, 2100-01-01T00:00:00Z) compared in UTC (see
`base.CLINICAL_EPOCH` for why); an instant outside is rejected here, at
the contract, with the code `clinical_date_out_of_range`.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from spinewatch.contracts.base import (
    CLINICAL_RANGE,
    ClinicalInstant,
    Contract,
    SiteId,
    SourceSystem,
)

SCHEMA_VERSION = 1


class EventEnvelope(Contract):
    event_id: UUID = Field(description="Unique per event; the idempotency key.")
    schema_version: Literal[1] = Field(description="Contract major version.")
    occurred_at: ClinicalInstant = Field(
        description=f"Clinical time, with timezone; in {CLINICAL_RANGE}."
    )
    recorded_at: ClinicalInstant = Field(
        description=f"Time the source recorded it, with timezone; in {CLINICAL_RANGE}."
    )
    source: SourceSystem
    site_id: SiteId
    patient_ref: UUID = Field(description="Pseudonymous patient key (never an MRN).")
    procedure_id: UUID = Field(description="Pseudonymous key of the index procedure.")
