"""`followup.recorded`: a pain and quality-of-life assessment after a procedure."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import ValidationInfo, field_validator, model_validator

from spinewatch.contracts.base import DaysSinceProcedure, Sf36Scores, VasScore
from spinewatch.contracts.envelope import EventEnvelope
from spinewatch.contracts.vocabulary import AnalgesicUse, FollowupTimepoint


class FollowupRecorded(EventEnvelope):
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
        if self.vas is None and self.sf36 is None and self.analgesic_use is None:
            raise ValueError("a follow-up must record at least one of vas, sf36, analgesic_use")
        return self
