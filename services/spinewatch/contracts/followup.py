"""`followup.recorded`: a pain and quality-of-life assessment after a procedure."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import ConfigDict, ValidationInfo, field_validator, model_validator

from spinewatch.contracts.base import DaysSinceProcedure, Sf36Scores, VasScore
from spinewatch.contracts.envelope import EventEnvelope, event_schema_rules
from spinewatch.contracts.schema_rules import given, one_of, when
from spinewatch.contracts.vocabulary import AnalgesicUse, FollowupTimepoint

_MEASURES = ("vas", "sf36", "analgesic_use")

# Mirrors _open_timepoints_are_placed and _something_measured.
_FOLLOWUP_RULES = (
    when(
        one_of("timepoint", [t for t in FollowupTimepoint if t.needs_days_since_procedure]),
        given("days_since_procedure"),
    ),
    {"anyOf": [given(measure) for measure in _MEASURES]},
)


class FollowupRecorded(EventEnvelope):
    model_config = ConfigDict(json_schema_extra=event_schema_rules(*_FOLLOWUP_RULES))

    event_type: Literal["followup.recorded"]
    timepoint: FollowupTimepoint
    days_since_procedure: DaysSinceProcedure | None = None
    vas: VasScore | None = None
    sf36: Sf36Scores | None = None
    analgesic_use: AnalgesicUse | None = None

    @field_validator("days_since_procedure")
    @classmethod
    def _open_timepoints_are_placed(cls, days: int | None, info: ValidationInfo) -> int | None:
        timepoint = info.data.get("timepoint")
        if days is None and timepoint is not None and timepoint.needs_days_since_procedure:
            raise ValueError(f"required when timepoint is {timepoint.value}")
        return days

    @model_validator(mode="after")
    def _something_measured(self) -> Self:
        if all(getattr(self, measure) is None for measure in _MEASURES):
            raise ValueError("a follow-up must record at least one of " + ", ".join(_MEASURES))
        return self
