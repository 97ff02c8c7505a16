"""Triage of inbound Kafka message values: typed events in, rejects out.

A message value is either one JSON event or a JSON array of events (the
bulk path: a replay or a batch upload sends thousands of events in one
message, so the per-message cost of the stream is paid once per batch).
Nothing here raises: every defect becomes a `Rejected` with field-level
errors, bound for the dead-letter topic, and the rest of the batch goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import msgspec
from pydantic import TypeAdapter, ValidationError

from spinewatch.contracts import Event, parse_event
from spinewatch.errors import FieldError, InvalidEvent

_BATCH_ADAPTER: Final[TypeAdapter[list[Event]]] = TypeAdapter(list[Event])


class RejectReason(StrEnum):
    """Why a message was dead-lettered: a bounded metric label."""

    INVALID_JSON = "invalid_json"
    NOT_AN_EVENT = "not_an_event"  # valid JSON, but neither an object nor an array
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    SCHEMA_VIOLATION = "schema_violation"


@dataclass(frozen=True, slots=True)
class Rejected:
    # The message's own bytes; for an item of a bulk message, that item
    # re-encoded as compact JSON (its index says where it sat).
    raw: bytes
    errors: tuple[FieldError, ...]
    reason: RejectReason
    index: int | None = None


@dataclass(slots=True)
class Triage:
    accepted: list[Event] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def triage(raw: bytes) -> Triage:
    """Split one message value into valid events and rejects."""
    if raw.lstrip()[:1] == b"[":
        return _triage_bulk(raw)
    result = Triage()
    try:
        result.accepted.append(parse_event(raw))
    except InvalidEvent as exc:
        result.rejected.append(_rejected(raw, exc.errors))
    return result


def _triage_bulk(raw: bytes) -> Triage:
    result = Triage()
    try:
        # Fast path: the whole batch validates in one call.
        result.accepted.extend(_BATCH_ADAPTER.validate_json(raw))
        return result
    except ValidationError:
        pass
    try:
        items = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        error = FieldError("<root>", "json_invalid", f"invalid JSON: {exc}")
        result.rejected.append(_rejected(raw, [error]))
        return result
    if not isinstance(items, list):  # pragma: no cover - raw starts with "["
        items = [items]
    for index, item in enumerate(items):
        encoded = msgspec.json.encode(item)
        try:
            result.accepted.append(parse_event(encoded))
        except InvalidEvent as exc:
            result.rejected.append(_rejected(encoded, exc.errors, index))
    return result


def _rejected(raw: bytes, errors: Sequence[FieldError], index: int | None = None) -> Rejected:
    return Rejected(raw, tuple(errors), _reason(errors), index)


def _reason(errors: Sequence[FieldError]) -> RejectReason:
    codes = {error.code for error in errors}
    if "json_invalid" in codes:
        return RejectReason.INVALID_JSON
    if codes & {"dict_type", "model_attributes_type", "model_type"} and len(errors) == 1:
        return RejectReason.NOT_AN_EVENT
    if codes & {"union_tag_invalid", "union_tag_not_found"}:
        return RejectReason.UNKNOWN_EVENT_TYPE
    if "unsupported_schema_version" in codes:
        return RejectReason.UNSUPPORTED_SCHEMA_VERSION
    return RejectReason.SCHEMA_VIOLATION
