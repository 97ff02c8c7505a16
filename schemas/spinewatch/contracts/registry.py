"""Parsing raw bytes into typed events, with field-level errors.

`parse_event` is the single entry point for inbound data. It never lets a
pydantic or JSON error escape: everything wrong with a payload comes back as
one `InvalidEvent` listing `FieldError`s with dotted paths, so the stream can
dead-letter the message and carry on.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from spinewatch.contracts.complication import ComplicationReported
from spinewatch.contracts.envelope import SCHEMA_VERSION, EventEnvelope
from spinewatch.contracts.followup import FollowupRecorded
from spinewatch.contracts.procedure import ProcedurePerformed
from spinewatch.contracts.retraction import EventRetracted
from spinewatch.errors import FieldError, InvalidEvent

Event = Annotated[
    ProcedurePerformed | FollowupRecorded | ComplicationReported | EventRetracted,
    Field(discriminator="event_type"),
]

EVENT_MODELS: Final[dict[str, type[EventEnvelope]]] = {
    "procedure.performed": ProcedurePerformed,
    "followup.recorded": FollowupRecorded,
    "complication.reported": ComplicationReported,
    "event.retracted": EventRetracted,
}

_EVENT_ADAPTER: Final[TypeAdapter[Event]] = TypeAdapter(Event)

ROOT = "<root>"


def parse_event(raw: bytes | str) -> Event:
    """Validate one JSON-encoded event; raise `InvalidEvent` on any defect."""
    try:
        return _EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise InvalidEvent(_field_errors(exc)) from None


def _field_errors(exc: ValidationError) -> list[FieldError]:
    details = exc.errors(include_input=False, include_url=False)
    return [_field_error(err) for err in details if not _echo_of_item_failure(err, details)]


def _echo_of_item_failure(err: ErrorDetails, details: list[ErrorDetails]) -> bool:
    """A failed item also makes pydantic report its list as too short; drop that echo."""
    if err["type"] != "too_short":
        return False
    prefix = tuple(err["loc"])
    return any(
        len(other["loc"]) > len(prefix) and tuple(other["loc"][: len(prefix)]) == prefix
        for other in details
    )


def _field_error(err: ErrorDetails) -> FieldError:
    loc = list(err["loc"])
    # A discriminated union prefixes locations with the matched tag
    # ("procedure.performed", "levels", 0, ...); the tag is not a field.
    if loc and loc[0] in EVENT_MODELS:
        loc = loc[1:]
    kind = err["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return FieldError(
            "event_type",
            kind,
            "must be one of: " + ", ".join(sorted(EVENT_MODELS)),
        )
    if kind == "literal_error" and loc == ["schema_version"]:
        return FieldError(
            "schema_version",
            "unsupported_schema_version",
            f"unsupported schema_version; this consumer reads version {SCHEMA_VERSION}",
        )
    location = ".".join(str(part) for part in loc) or ROOT
    return FieldError(location, kind, err["msg"])
