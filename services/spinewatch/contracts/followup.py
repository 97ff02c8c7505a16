"""`followup.recorded`: a pain and quality-of-life assessment after a procedure.

Versions. Version 2 adds two optional, closed-vocabulary outcomes the seeds
report for the other treatments of hemangioma (seeds 001/002/004):
`neurological_status` (change against the pre-procedure examination) and
`pain_relief` (complete / partial / none). Version 1 events stay valid
unchanged; a version 1 event carrying a version 2 field is rejected at that
field (code `needs_schema_version_2`), so a producer that forgot to bump its
version is told so instead of having the field silently read.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from spinewatch.contracts.base import DaysSinceProcedure, Sf36Scores, VasScore
from spinewatch.contracts.envelope import EventEnvelope, event_schema_rules
from spinewatch.contracts.schema_rules import given, is_value, one_of, when
from spinewatch.contracts.vocabulary import (
    AnalgesicUse,
    FollowupTimepoint,
    NeurologicalStatus,
    PainRelief,
)

FOLLOWUP_SCHEMA_VERSIONS = (1, 2)
# Fields a version 1 follow-up may not carry.
VERSION_2_FIELDS = ("neurological_status", "pain_relief")
NEEDS_SCHEMA_VERSION_2 = "needs_schema_version_2"

_MEASURES = ("vas", "sf36", "analgesic_use", *VERSION_2_FIELDS)

# Mirrors _open_timepoints_are_placed, _something_measured and _version_2_fields.
_FOLLOWUP_RULES = (
    when(
        one_of("timepoint", [t for t in FollowupTimepoint if t.needs_days_since_procedure]),
        given("days_since_procedure"),
    ),
    {"anyOf": [given(measure) for measure in _MEASURES]},
    # Absent or null in version 1 (a null reads as absent, as everywhere).
    when(
        is_value("schema_version", 1),
        {"properties": {name: {"type": "null"} for name in VERSION_2_FIELDS}},
    ),
)


class FollowupRecorded(EventEnvelope):
    model_config = ConfigDict(json_schema_extra=event_schema_rules(*_FOLLOWUP_RULES))

    # Widens the envelope's Literal[1] for this event type only (mypy sees a
    # narrowing violation; no code reads schema_version through the envelope
    # type, and the other event types stay at version 1).
    schema_version: Literal[1, 2] = Field(  # type: ignore[assignment]
        description="Contract major version: 2 adds neurological_status and pain_relief; "
        "1 is still read."
    )
    event_type: Literal["followup.recorded"]
    timepoint: FollowupTimepoint
    days_since_procedure: DaysSinceProcedure | None = None
    vas: VasScore | None = None
    sf36: Sf36Scores | None = None
    analgesic_use: AnalgesicUse | None = None
    neurological_status: NeurologicalStatus | None = Field(
        default=None,
        description="Version 2: neurological examination against the pre-procedure one.",
    )
    pain_relief: PainRelief | None = Field(
        default=None, description="Version 2: pain relief against the pre-procedure pain."
    )

    @field_validator("days_since_procedure")
    @classmethod
    def _open_timepoints_are_placed(cls, days: int | None, info: ValidationInfo) -> int | None:
        timepoint = info.data.get("timepoint")
        if days is None and timepoint is not None and timepoint.needs_days_since_procedure:
            raise ValueError(f"required when timepoint is {timepoint.value}")
        return days

    @field_validator(*VERSION_2_FIELDS)
    @classmethod
    def _version_2_fields(cls, value: object, info: ValidationInfo) -> object:
        if value is not None and info.data.get("schema_version") == 1:
            # Names the field (the location) and the version, never the value.
            raise PydanticCustomError(
                NEEDS_SCHEMA_VERSION_2, "this field needs schema_version 2 (sent: 1)"
            )
        return value

    @model_validator(mode="after")
    def _something_measured(self) -> Self:
        if all(getattr(self, measure) is None for measure in _MEASURES):
            raise ValueError("a follow-up must record at least one of " + ", ".join(_MEASURES))
        return self
