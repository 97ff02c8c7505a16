"""From raw event bytes to an answer per event: validate, authorise, claim, write, confirm.

One path for the single endpoint, the batch endpoint and FHIR bundles:

1. validate against the contracts (`parse_event`: field-level errors that
   never echo a value) -> `rejected`;
2. authorise against the credential's source and sites -> `forbidden`;
3. claim the event_id in Redis (`idempotency`) -> `duplicate`, `conflict`
   or `retry` (the same event is being written right now), or ours;
4. write every claimed event (`EventProducer.send_all`: appended to the
   producer's batches, acknowledgements awaited together, acks=all) and
   answer `accepted` only for those the broker acknowledged; the others are
   released and answered `retry`, so nothing answered `accepted` is lost.

What is written is the event's canonical JSON (the validated model dumped
again): the engine reads exactly what was validated here, and the content
digest that tells a duplicate from a conflict is taken of the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from uuid import UUID

from spinewatch.contracts import Event, parse_event
from spinewatch.errors import FieldError, InvalidEvent
from spinewatch.gateway.auth import Forbidden, SourceGrant, authorise
from spinewatch.gateway.idempotency import Claim, IdempotencyStore, Key, content_digest
from spinewatch.gateway.metrics import GatewayMetrics
from spinewatch.gateway.producer import EventProducer, NotWritten
from spinewatch.runtime.log_repeats import RepeatLimit

log = logging.getLogger(__name__)
# A fault that hits every request (Redis away) is one line per 10 s, with a count.
log.addFilter(RepeatLimit(loggers=(__name__,)))


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    REJECTED = "rejected"
    FORBIDDEN = "forbidden"
    RETRY = "retry"


CONFLICT_REASON = (
    "this event_id was sent before with different content; an event is never "
    "overwritten: send a correction as an event.retracted plus a new event with a new event_id"
)
IN_BATCH_CONFLICT_REASON = "this event_id occurs earlier in the batch with different content"
IN_FLIGHT_REASON = "the same event is being written by another request right now; retry shortly"
STORE_DOWN_REASON = "the idempotency store (Redis) is unavailable; retry later"


@dataclass(frozen=True, slots=True)
class Result:
    """The answer for one event."""

    outcome: Outcome
    event_id: UUID | None = None
    errors: tuple[FieldError, ...] = ()
    reason: str | None = None
    refusal: str | None = None  # a forbidden event's code (a metric label), not sent

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.outcome.value}
        if self.event_id is not None:
            body["event_id"] = str(self.event_id)
        if self.errors:
            body["errors"] = [error_json(e) for e in self.errors]
        if self.reason is not None:
            body["reason"] = self.reason
        return body


def error_json(error: FieldError) -> dict[str, str]:
    return {"loc": error.location, "type": error.code, "msg": error.message}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A valid event this credential may write, in canonical form."""

    event: Event
    payload: bytes
    # What tells a duplicate from a conflict; the payload unless the caller
    # knows part of it is not the sender's content (a FHIR receipt time).
    fingerprint: bytes | None = None
    key: Key = field(init=False)

    def __post_init__(self) -> None:
        digest = content_digest(self.payload if self.fingerprint is None else self.fingerprint)
        object.__setattr__(self, "key", Key(self.event.event_id, digest))


def examine(raw: bytes | str, grant: SourceGrant, max_bytes: int) -> Candidate | Result:
    """Steps 1 and 2: a candidate to write, or the answer why not."""
    try:
        event = parse_event(raw)
    except InvalidEvent as exc:
        return Result(Outcome.REJECTED, errors=exc.errors)
    return screen(event, grant, max_bytes)


def screen(
    event: Event, grant: SourceGrant, max_bytes: int, fingerprint: bytes | None = None
) -> Candidate | Result:
    """Step 2 for an event already validated (a FHIR mapping's output)."""
    refusal: Forbidden | None = authorise(grant, event)
    if refusal is not None:
        return Result(
            Outcome.FORBIDDEN, event.event_id, reason=refusal.reason, refusal=refusal.code.value
        )
    payload = event.model_dump_json().encode()
    if len(payload) > max_bytes:
        error = FieldError("<root>", "too_large", f"the event exceeds {max_bytes} bytes")
        return Result(Outcome.REJECTED, event.event_id, errors=(error,))
    return Candidate(event, payload, fingerprint)


class Intake:
    def __init__(
        self, producer: EventProducer, store: IdempotencyStore, metrics: GatewayMetrics
    ) -> None:
        self.producer = producer
        self.store = store
        self.metrics = metrics

    async def admit(self, items: Sequence[Candidate | Result]) -> list[Result]:
        """Steps 3 and 4 for every candidate; results in the order of `items`, counted."""
        results: list[Result | None] = [i if isinstance(i, Result) else None for i in items]
        first: dict[UUID, int] = {}  # event_id -> index of its first candidate in the request
        echoes: list[int] = []  # later candidates with an event_id seen earlier in the request
        claimable: list[int] = []
        for i, item in enumerate(items):
            if isinstance(item, Candidate):
                if item.key.event_id in first:
                    echoes.append(i)
                else:
                    first[item.key.event_id] = i
                    claimable.append(i)
        candidates = [_candidate(items[i]) for i in claimable]
        for i, result in zip(claimable, await self._write(candidates), strict=True):
            results[i] = result
        for i in echoes:
            origin = first[_candidate(items[i]).key.event_id]
            results[i] = _echo(_candidate(items[i]), _candidate(items[origin]), results[origin])
        final = [r for r in results if r is not None]
        self._count(final)
        return final

    async def _write(self, candidates: list[Candidate]) -> list[Result]:
        if not candidates:
            return []
        try:
            claims = await self.store.claim([c.key for c in candidates])
        except Exception as exc:
            log.warning("gateway: idempotency claim failed (%s)", type(exc).__name__)
            return [_retry(c, STORE_DOWN_REASON) for c in candidates]
        ours = [c for c, claim in zip(candidates, claims, strict=True) if claim is Claim.NEW]
        sent = await self.producer.send_all([(c.event.procedure_id, c.payload) for c in ours])
        written = {c.key for c, error in zip(ours, sent, strict=True) if error is None}
        failed = {c.key: e for c, e in zip(ours, sent, strict=True) if e is not None}
        await self._settle([c.key for c in ours if c.key in written], list(failed))
        return [_answer(c, claim, c.key in written, failed.get(c.key)) for c, claim in
                zip(candidates, claims, strict=True)]  # fmt: skip

    async def _settle(self, written: list[Key], failed: list[Key]) -> None:
        try:
            await self.store.confirm(written)
        except Exception as exc:
            # The broker has them: they stay accepted. Until the pending claim
            # expires a retry is answered `retry`; after it, a re-send is
            # written again and the engine ignores the copy.
            log.warning("gateway: %d written events not recorded as such (%s)",
                        len(written), type(exc).__name__)  # fmt: skip
        try:
            await self.store.release(failed)
        except Exception as exc:
            log.warning("gateway: %d failed claims not released (%s); they expire",
                        len(failed), type(exc).__name__)  # fmt: skip

    def _count(self, results: list[Result]) -> None:
        for outcome in Outcome:
            self.metrics.outcome(outcome.value, sum(1 for r in results if r.outcome is outcome))
        for result in results:
            if result.outcome is Outcome.REJECTED:
                self.metrics.rejected(sorted({e.code for e in result.errors}))
            elif result.outcome is Outcome.FORBIDDEN and result.refusal is not None:
                self.metrics.rejected([result.refusal])


def _candidate(item: Candidate | Result) -> Candidate:
    assert isinstance(item, Candidate)  # noqa: S101 - indices come from the candidates
    return item


def _answer(c: Candidate, claim: Claim, written: bool, error: BaseException | None) -> Result:
    event_id = c.key.event_id
    if claim is Claim.DUPLICATE:
        return Result(Outcome.DUPLICATE, event_id)
    if claim is Claim.CONFLICT:
        return Result(Outcome.CONFLICT, event_id, reason=CONFLICT_REASON)
    if claim is Claim.IN_FLIGHT:
        return _retry(c, IN_FLIGHT_REASON)
    if written:
        return Result(Outcome.ACCEPTED, event_id)
    reason = str(error) if isinstance(error, NotWritten) else "the write failed"
    return _retry(c, f"not written: {reason}; retry later")


def _retry(c: Candidate, reason: str) -> Result:
    return Result(Outcome.RETRY, c.key.event_id, reason=reason)


def _echo(item: Candidate, origin: Candidate, answered: Result | None) -> Result:
    """A second copy of an event within one request follows the first."""
    event_id = item.key.event_id
    if item.key.digest != origin.key.digest:
        return Result(Outcome.CONFLICT, event_id, reason=IN_BATCH_CONFLICT_REASON)
    if answered is None or answered.outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE):
        return Result(Outcome.DUPLICATE, event_id)
    return Result(answered.outcome, event_id, reason=answered.reason)
