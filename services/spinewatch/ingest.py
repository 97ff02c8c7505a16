"""Triage of inbound Kafka message values: fact batches per site in, rejects out.

A message value is either one JSON event or a JSON array of events (the
bulk path: a replay or a batch upload sends thousands of events in one
message, so the per-message cost of the stream is paid once per batch).
Nothing here raises: every defect becomes a `Rejected` with field-level
errors, bound for the dead-letter topic, and the rest of the batch goes on.

`ingest_batch` is a pure function of plain values, so a worker can run it
in a child process (`spinewatch.ingest_pool`): validation is most of the
CPU a bulk batch costs, and the state updates then run on another core.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import msgspec
from pydantic import TypeAdapter, ValidationError

from spinewatch.adapters.state_codec import encode_facts
from spinewatch.contracts import Event, parse_event
from spinewatch.domain.facts import Fact, fact_of
from spinewatch.errors import FieldError, InvalidEvent

# A fact encodes to 60-250 bytes: 2000 keep a fact batch well under 1 MB.
MAX_FACTS_PER_MESSAGE = 2000

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
    bulk: bool
    accepted: list[Event] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def triage(raw: bytes) -> Triage:
    """Split one message value into valid events and rejects."""
    if raw.lstrip()[:1] == b"[":
        return _triage_bulk(raw)
    result = Triage(bulk=False)
    try:
        result.accepted.append(parse_event(raw))
    except InvalidEvent as exc:
        result.rejected.append(_rejected(raw, exc.errors))
    return result


def _triage_bulk(raw: bytes) -> Triage:
    result = Triage(bulk=True)
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


@dataclass(frozen=True, slots=True)
class MessageOrigin:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected payload with the reason, for the dead-letter topic."""

    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(slots=True)
class IngestResult:
    """One triaged batch: encoded fact batches per site, and dead letters."""

    # Several messages per site when a batch holds more than
    # MAX_FACTS_PER_MESSAGE facts: a broker refuses records over 1 MB.
    fact_batches: list[tuple[str, bytes]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    messages_by_path: Counter[str] = field(default_factory=Counter)
    accepted_by_type: Counter[str] = field(default_factory=Counter)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)


def ingest_batch(messages: Iterable[tuple[bytes, MessageOrigin]]) -> IngestResult:
    """Triage message values and reduce the valid events to facts, per site."""
    result = IngestResult()
    facts_by_site: defaultdict[str, list[tuple[bytes, Fact]]] = defaultdict(list)
    for raw, origin in messages:
        triaged = triage(raw)
        result.messages_by_path["bulk" if triaged.bulk else "single"] += 1
        for event in triaged.accepted:
            result.accepted_by_type[event.event_type] += 1
            facts_by_site[event.site_id].append((event.procedure_id.bytes, fact_of(event)))
        for rejected in triaged.rejected:
            result.rejected_by_reason[rejected.reason.value] += 1
            result.dead_letters.append(_dead_letter(rejected, origin))
    for site_id, items in facts_by_site.items():
        for start in range(0, len(items), MAX_FACTS_PER_MESSAGE):
            chunk = items[start : start + MAX_FACTS_PER_MESSAGE]
            result.fact_batches.append((site_id, encode_facts(chunk)))
    return result


def _dead_letter(rejected: Rejected, origin: MessageOrigin) -> DeadLetter:
    errors = [
        {"field": error.location, "code": error.code, "message": error.message}
        for error in rejected.errors
    ]
    headers: list[tuple[str, bytes]] = [
        ("spinewatch-reason", rejected.reason.value.encode()),
        ("spinewatch-errors", json.dumps(errors).encode()),
        ("spinewatch-source-topic", origin.topic.encode()),
        ("spinewatch-source-partition", str(origin.partition).encode()),
        ("spinewatch-source-offset", str(origin.offset).encode()),
    ]
    if rejected.index is not None:
        headers.append(("spinewatch-bulk-index", str(rejected.index).encode()))
    return DeadLetter(rejected.raw, headers)
