"""Parsing raw bytes into typed events, with field-level errors.

`parse_event` is the single entry point for inbound data. It never lets a
pydantic or JSON error escape: everything wrong with a payload comes back as
one `InvalidEvent` listing `FieldError`s with dotted paths, so the stream can
dead-letter the message and carry on.

A location never repeats a name the sender made up: pydantic's
`extra_forbidden` puts an unknown key in the location verbatim, and a key
can itself identify someone (`{"Jane Doe 1961-03-02": 1}`). Such a key is
reported by its position in its JSON object instead (`levels.0.<field 3>`);
locations travel into dead-letter headers and `spinewatch validate` output.
"""

from __future__ import annotations

import functools
from enum import Enum
from typing import Annotated, Any, Final, get_args

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, from_json

from spinewatch.contracts import vocabulary
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
UNKNOWN_FIELD = "<unknown field>"
NAME_WITHHELD = "field name withheld, reported by its position"
# Location parts pydantic adds itself (a dict key's own error).
_PYDANTIC_MARKERS: Final = frozenset({"[key]"})


def parse_event(raw: bytes | str) -> Event:
    """Validate one JSON-encoded event; raise `InvalidEvent` on any defect."""
    try:
        return _EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise InvalidEvent(_field_errors(exc, raw)) from None


def _field_errors(exc: ValidationError, raw: bytes | str) -> list[FieldError]:
    details = exc.errors(include_input=False, include_url=False)
    document = _Document(raw)
    return [
        _field_error(err, document) for err in details if not _echo_of_item_failure(err, details)
    ]


def _echo_of_item_failure(err: ErrorDetails, details: list[ErrorDetails]) -> bool:
    """A failed item also makes pydantic report its list as too short; drop that echo."""
    if err["type"] != "too_short":
        return False
    prefix = tuple(err["loc"])
    return any(
        len(other["loc"]) > len(prefix) and tuple(other["loc"][: len(prefix)]) == prefix
        for other in details
    )


def _field_error(err: ErrorDetails, document: _Document) -> FieldError:
    loc = list(err["loc"])
    # A discriminated union prefixes locations with the matched tag
    # ("procedure.performed", "levels", 0, ...); the tag is not a field.
    event_type = loc[0] if loc and loc[0] in EVENT_MODELS else None
    if event_type is not None:
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
            "unsupported schema_version; this consumer reads "
            + _readable_versions(str(event_type) if event_type else None),
        )
    parts, withheld = _safe_location(loc, document)
    location = ".".join(parts) or ROOT
    message = f"{err['msg']} ({NAME_WITHHELD})" if withheld else err["msg"]
    return FieldError(location, kind, message)


def _readable_versions(event_type: str | None) -> str:
    """What the engine reads: version 1, or versions 1, 2 of followup.recorded."""
    if event_type is None:
        return f"version {SCHEMA_VERSION}"
    versions = schema_versions(event_type)
    if versions == (SCHEMA_VERSION,):
        return f"version {SCHEMA_VERSION}"
    return f"versions {', '.join(map(str, versions))} of {event_type}"


@functools.cache
def schema_versions(event_type: str) -> tuple[int, ...]:
    """The schema versions the engine reads for an event type, oldest first."""
    annotation = EVENT_MODELS[event_type].model_fields["schema_version"].annotation
    return tuple(sorted(int(v) for v in get_args(annotation)))


def _safe_location(loc: list[int | str], document: _Document) -> tuple[list[str], bool]:
    """Location parts with every unknown name replaced by its position."""
    known = _known_names()
    if all(isinstance(part, int) or part in known for part in loc):
        return [str(part) for part in loc], False
    # Error path only: walk the sender's JSON along the location to find
    # where each unknown key sits in its object.
    node: Any = document.parsed()
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(str(part))
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            continue
        in_object = isinstance(node, dict) and part in node
        if part in known:
            parts.append(part)
        elif in_object:
            parts.append(f"<field {list(node).index(part) + 1}>")
        else:
            parts.append(UNKNOWN_FIELD)
        node = node[part] if in_object else None
    return parts, True


class _Document:
    """The raw event, parsed again only if an error location needs it."""

    def __init__(self, raw: bytes | str) -> None:
        self._raw = raw
        self._parsed: Any = None
        self._done = False

    def parsed(self) -> Any:
        if not self._done:
            self._done = True
            try:
                self._parsed = from_json(self._raw)
            except ValueError:
                self._parsed = None
        return self._parsed


@functools.cache
def _known_names() -> frozenset[str]:
    """Names a location may show: the contracts' own, not the sender's.

    Field names and aliases of every contract model (nested ones included,
    from the JSON schemas), the event type tags, the controlled vocabulary
    and pydantic's own markers.
    """
    names: set[str] = set(EVENT_MODELS) | _PYDANTIC_MARKERS
    for model in EVENT_MODELS.values():
        # Validation mode: the names (aliases included) a sender may send.
        schema = model.model_json_schema(mode="validation")
        for definition in (schema, *schema.get("$defs", {}).values()):
            names.update(definition.get("properties", {}))
    for value in vars(vocabulary).values():
        if isinstance(value, type) and issubclass(value, Enum):
            names.update(str(member.value) for member in value)
    return frozenset(names)
