"""`event.retracted`: an upstream system marks an earlier event entered-in-error.

Retracting a `procedure.performed` voids the whole procedure, with every
follow-up and complication attached to it. A correction is a retraction plus
a new event with a new `event_id` (`reason: superseded`); events are never
edited in place, so every metric can be rebuilt from the log.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import ValidationInfo, field_validator

from spinewatch.contracts.envelope import EventEnvelope
from spinewatch.contracts.vocabulary import RetractionReason


class EventRetracted(EventEnvelope):
    event_type: Literal["event.retracted"]
    target_event_id: UUID
    reason: RetractionReason

    @field_validator("target_event_id")
    @classmethod
    def _not_self_referential(cls, target: UUID, info: ValidationInfo) -> UUID:
        if target == info.data.get("event_id"):
            raise ValueError("an event cannot retract itself")
        return target
