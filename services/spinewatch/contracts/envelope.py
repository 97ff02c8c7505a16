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

from collections.abc import Callable
from typing import Literal

from pydantic import Field
from pydantic.config import JsonDict

from spinewatch.contracts.base import (
    CALENDAR_DAY_RESIDUE,
    CLINICAL_RANGE,
    CLINICAL_RANGE_RESIDUE,
    ClinicalInstant,
    Contract,
    SiteId,
    SourceSystem,
    Uuid,
)
from spinewatch.contracts.schema_rules import Fragment, schema_rules

SCHEMA_VERSION = 1

# Rules of every event that JSON Schema cannot express (see event_schema_rules).
ENVELOPE_RESIDUE = (
    CLINICAL_RANGE_RESIDUE,
    CALENDAR_DAY_RESIDUE,
    # JSON Schema's data model has one number type: 5.0 is the integer 5.
    # The contracts are strict, so an integer written with a fraction or an
    # exponent is a type error there.
    "integers (schema_version, days, minutes) are written without a fraction or exponent: "
    "JSON Schema counts 5.0 and 5e0 as the integer 5, the engine does not",
    "patterns are ECMA-262 regular expressions, as JSON Schema specifies: $ ends the string "
    "(validators built on Python's re also let it match before a final newline, which the "
    "engine rejects)",
)


def event_schema_rules(
    *rules: Fragment, engine_only: tuple[str, ...] = ()
) -> Callable[[JsonDict], None]:
    """`schema_rules` for an event model: its own residue after the envelope's."""
    return schema_rules(*rules, engine_only=(*ENVELOPE_RESIDUE, *engine_only))


class EventEnvelope(Contract):
    event_id: Uuid = Field(description="Unique per event; the idempotency key.")
    schema_version: Literal[1] = Field(description="Contract major version.")
    occurred_at: ClinicalInstant = Field(
        description=f"Clinical time, with timezone; in {CLINICAL_RANGE}."
    )
    recorded_at: ClinicalInstant = Field(
        description=f"Time the source recorded it, with timezone; in {CLINICAL_RANGE}."
    )
    source: SourceSystem
    site_id: SiteId
    patient_ref: Uuid = Field(description="Pseudonymous patient key (never an MRN).")
    procedure_id: Uuid = Field(description="Pseudonymous key of the index procedure.")
