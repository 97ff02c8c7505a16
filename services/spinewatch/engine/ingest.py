"""Triage of inbound Kafka message values: fact batches per site in, rejects out.

A message value is either one JSON event or a JSON array of events (the
bulk path: a replay or a batch upload sends thousands of events in one
message, so the per-message cost of the stream is paid once per batch).
Nothing here raises for a message: every defect becomes a `Rejected` with
field-level errors, bound for the dead-letter topic, and the rest of the
batch goes on. That includes our own defects: an exception while handling
one message dead-letters that message (`internal_error`, see
`spinewatch.runtime.failures`) instead of killing the agent.

Bounds come first. A message over `max_message_bytes` is not decoded at
all. The fast path's parser (jiter, inside pydantic-core) stops at 200
levels of nesting by itself, and a valid event nests at most 6 deep, so
valid messages skip the nesting scan (it would cost about a quarter of
validation on the bulk path: 9 ms against 35 ms per MB of events); any
message that fails validation is scanned before an unbounded decoder
(msgspec) sees it.

`ingest_batch` is a pure function of plain values, so a worker can run it
in a child process (`spinewatch.engine.ingest_pool`): validation is most of the
CPU a bulk batch costs, and the state updates then run on another core.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec
from pydantic import TypeAdapter, ValidationError

from spinewatch.adapters.state_codec import encode_facts
from spinewatch.contracts import Event, parse_event
from spinewatch.domain.outcomes.facts import Fact, fact_of
from spinewatch.errors import FieldError, InvalidEvent
from spinewatch.runtime.dead_letters import (
    DEFAULT_MAX_VALUE_BYTES,
    DeadLetter,
    MessageOrigin,
    dead_letter,
)
from spinewatch.runtime.failures import (
    InputLimits,
    RejectReason,
    internal_error,
    too_deep,
    too_large,
)

__all__ = [
    "DeadLetter",
    "IngestLimits",
    "IngestResult",
    "MessageOrigin",
    "RejectReason",
    "Rejected",
    "ingest_batch",
    "triage",
]

# A fact encodes to 60-250 bytes: 2000 keep a fact batch well under 1 MB.
MAX_FACTS_PER_MESSAGE = 2000

_BATCH_ADAPTER: Final[TypeAdapter[list[Event]]] = TypeAdapter(list[Event])


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """What a worker's settings bound: the input, and the dead letters it writes."""

    input: InputLimits = field(default_factory=InputLimits)
    deadletter_max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES


DEFAULT_INPUT_LIMITS = InputLimits()
DEFAULT_LIMITS = IngestLimits()


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
    # Each accepted event with its index in a bulk message (None: single).
    accepted: list[tuple[Event, int | None]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def triage(raw: bytes, limits: InputLimits = DEFAULT_INPUT_LIMITS) -> Triage:
    """Split one message value into valid events and rejects."""
    bulk = raw.lstrip()[:1] == b"["
    oversized = too_large(raw, limits)
    if oversized is not None:
        return Triage(bulk, rejected=[_rejected(raw, [oversized])])
    if bulk:
        return _triage_bulk(raw, limits)
    result = Triage(bulk=False)
    try:
        result.accepted.append((parse_event(raw), None))
    except InvalidEvent as exc:
        deep = too_deep(raw, limits)
        result.rejected.append(_rejected(raw, [deep] if deep else exc.errors))
    return result


def _triage_bulk(raw: bytes, limits: InputLimits) -> Triage:
    result = Triage(bulk=True)
    try:
        # Fast path: the whole batch validates in one call.
        events = _BATCH_ADAPTER.validate_json(raw)
    except ValidationError:
        pass
    else:
        if events:
            result.accepted.extend((event, index) for index, event in enumerate(events))
        else:
            result.rejected.append(_rejected(raw, [_EMPTY]))
        return result
    deep = too_deep(raw, limits)
    if deep is not None:
        result.rejected.append(_rejected(raw, [deep]))
        return result
    try:
        items = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        error = FieldError("<root>", "json_invalid", f"invalid JSON: {exc}")
        result.rejected.append(_rejected(raw, [error]))
        return result
    if not isinstance(items, list):  # pragma: no cover - raw starts with "["
        items = [items]
    if not items:
        result.rejected.append(_rejected(raw, [_EMPTY]))
    for index, item in enumerate(items):
        encoded = msgspec.json.encode(item)
        try:
            result.accepted.append((parse_event(encoded), index))
        except InvalidEvent as exc:
            result.rejected.append(_rejected(encoded, exc.errors, index))
    return result


_EMPTY = FieldError("<root>", RejectReason.EMPTY_BATCH.value, "a bulk message holds no events")


def _rejected(raw: bytes, errors: Sequence[FieldError], index: int | None = None) -> Rejected:
    return Rejected(raw, tuple(errors), _reason(errors), index)


def _reason(errors: Sequence[FieldError]) -> RejectReason:
    codes = {error.code for error in errors}
    for own in (
        RejectReason.MESSAGE_TOO_LARGE,
        RejectReason.NESTING_TOO_DEEP,
        RejectReason.EMPTY_BATCH,
        RejectReason.INTERNAL_ERROR,
    ):
        if own.value in codes:
            return own
    if "json_invalid" in codes:
        return RejectReason.INVALID_JSON
    if codes & {"dict_type", "model_attributes_type", "model_type"} and len(errors) == 1:
        return RejectReason.NOT_AN_EVENT
    if codes & {"union_tag_invalid", "union_tag_not_found"}:
        return RejectReason.UNKNOWN_EVENT_TYPE
    if "unsupported_schema_version" in codes:
        return RejectReason.UNSUPPORTED_SCHEMA_VERSION
    return RejectReason.SCHEMA_VIOLATION


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


FactItem = tuple[str, bytes, Fact]  # (site id, procedure id as UUID bytes, fact)


def ingest_batch(
    messages: Iterable[tuple[bytes, MessageOrigin]], limits: IngestLimits = DEFAULT_LIMITS
) -> IngestResult:
    """Triage message values and reduce the valid events to facts, per site."""
    result = IngestResult()
    facts_by_site: defaultdict[str, list[tuple[bytes, Fact]]] = defaultdict(list)
    for raw, origin in messages:
        try:
            triaged = triage(raw, limits.input)
        except Exception as exc:  # a defect of ours: this message only
            triaged = Triage(bulk=False, rejected=[_rejected(raw, [internal_error(exc)])])
        result.messages_by_path["bulk" if triaged.bulk else "single"] += 1
        for event, index in triaged.accepted:
            try:
                item = (event.procedure_id.bytes, fact_of(event))
            except Exception as exc:  # as above, for one event
                encoded = event.model_dump_json().encode()
                triaged.rejected.append(_rejected(encoded, [internal_error(exc)], index))
                continue
            result.accepted_by_type[event.event_type] += 1
            facts_by_site[event.site_id].append(item)
        for rejected in triaged.rejected:
            result.rejected_by_reason[rejected.reason.value] += 1
            result.dead_letters.append(_letter(rejected, origin, limits))
    for site_id, items in facts_by_site.items():
        for start in range(0, len(items), MAX_FACTS_PER_MESSAGE):
            chunk = items[start : start + MAX_FACTS_PER_MESSAGE]
            result.fact_batches.append((site_id, encode_facts(chunk)))
    return result


def internal_error_result(
    raw: bytes, origin: MessageOrigin, exc: BaseException, limits: IngestLimits
) -> IngestResult:
    """The result for a message whose triage itself failed (a crashed child process)."""
    result = IngestResult()
    rejected = _rejected(raw, [internal_error(exc)])
    result.messages_by_path["bulk" if raw.lstrip()[:1] == b"[" else "single"] += 1
    result.rejected_by_reason[rejected.reason.value] += 1
    result.dead_letters.append(_letter(rejected, origin, limits))
    return result


def _letter(rejected: Rejected, origin: MessageOrigin, limits: IngestLimits) -> DeadLetter:
    return dead_letter(
        rejected.raw,
        rejected.errors,
        rejected.reason.value,
        origin,
        index=rejected.index,
        max_value_bytes=limits.deadletter_max_value_bytes,
    )
