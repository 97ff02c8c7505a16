"""`event.retracted`: an upstream system marks an earlier event entered-in-error.

Retracting a `procedure.performed` voids the whole procedure, with every
follow-up and complication attached to it. A correction is a retraction plus
a new event with a new `event_id` (`reason: superseded`); events are never
edited in place, so every metric can be rebuilt from the log.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import ConfigDict, ValidationInfo, field_validator

from spinewatch.contracts.base import Uuid
from spinewatch.contracts.envelope import EventEnvelope, event_schema_rules
from spinewatch.contracts.vocabulary import RetractionReason


class EventRetracted(EventEnvelope):
    # JSON Schema compares a value with constants, never with another field.
    model_config = ConfigDict(
        json_schema_extra=event_schema_rules(
            engine_only=("target_event_id differs from event_id: an event cannot retract itself",)
        )
    )

    event_type: Literal["event.retracted"]
    target_event_id: Uuid
    reason: RetractionReason

    @field_validator("target_event_id")
    @classmethod
    def _not_self_referential(cls, target: UUID, info: ValidationInfo) -> UUID:
        if target == info.data.get("event_id"):
            raise ValueError("an event cannot retract itself")
        return target
