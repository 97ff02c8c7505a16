"""What the worker's agents and loops do with each batch, behind the failure policy.

* `IngestStep`: triage a batch of inbound messages (in the ingest pool),
  write its dead letters and wait for the broker's acknowledgement, only
  then count it, and forward the fact batches.
* `ApplyStep`: verify one fact batch's signature, then apply it; a batch
  that fails verification is dead-lettered unapplied (`unsigned`,
  `bad_signature`, `unknown_key`: written by something without the
  deployment's key), one that cannot be applied too (`unreadable_facts`,
  or `internal_error` after which the partitions' state is rebuilt from
  the changelog, since an exception may have left it half-applied).
* `publish_outbox`: the drift monitor's look-back lists and messages,
  acknowledged one by one; whatever is not acknowledged when the loop stops
  goes back to the outbox.

Each reports the offsets it finished to the stream health.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from faust.types import EventT

from spinewatch.adapters.acked_send import Outgoing, send_all
from spinewatch.adapters.message_signing import Keyring, TopicKind, fault_error
from spinewatch.adapters.state_codec import UnreadableState
from spinewatch.adapters.stream_health import StreamHealth
from spinewatch.engine.drift_monitor import DriftMonitor
from spinewatch.engine.ingest_pool import IngestPool
from spinewatch.engine.outcomes import OutcomeEngine
from spinewatch.errors import FieldError
from spinewatch.runtime.dead_letters import (
    DEFAULT_MAX_VALUE_BYTES,
    DeadLetter,
    MessageOrigin,
    dead_letter,
    shrunk,
)
from spinewatch.runtime.failures import FailurePolicy, RejectReason, internal_error

log = logging.getLogger(__name__)

# A letter refused as too large is resent with a head this long: the size
# and hash headers still identify the original.
SHRUNK_VALUE_BYTES = 16 << 10


class IngestStep:
    def __init__(
        self,
        engine: OutcomeEngine,
        pool: IngestPool,
        facts: Any,
        deadletter: Any,
        *,
        health: StreamHealth,
        policy: FailurePolicy | None = None,
    ) -> None:
        self.engine = engine
        self.pool = pool
        self.facts = facts
        self.deadletter = deadletter
        self.health = health
        self.policy = policy or FailurePolicy()

    async def __call__(self, batch: Sequence[EventT[Any]]) -> None:
        messages = [(_value(event), _origin(event)) for event in batch]
        done = 0
        async for result in self.pool.triaged(messages):
            self.health.active()
            await write_dead_letters(
                self.deadletter, result.dead_letters, self.policy, self.health.active
            )
            self.engine.count_ingested(result)  # only once the letters are on the broker
            for site_id, fact_batch in result.fact_batches:
                await self.facts.send(key=site_id, value=fact_batch)
            # Progress per chunk, not per batch: a batch of large messages
            # can take longer than the stall threshold as a whole.
            covered = sum(result.messages_by_path.values())
            for _, origin in messages[done : done + covered]:
                self.health.processed(origin.topic, origin.partition, origin.offset)
            done += covered


class ApplyStep:
    def __init__(
        self,
        engine: OutcomeEngine,
        segments: Any,
        deadletter: Any,
        active_partitions: Callable[[], set[int]],
        *,
        keyring: Keyring,
        health: StreamHealth,
        policy: FailurePolicy | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.segments = segments
        self.max_value_bytes = max_value_bytes
        self.deadletter = deadletter
        self.health = health
        self.active_partitions = active_partitions
        self.policy = policy or FailurePolicy()

    async def __call__(self, event: EventT[Any]) -> None:
        origin = _origin(event)
        raw = _value(event)
        message = event.message
        # Before anything is decoded: a forged batch must not reach the state.
        fault = self.keyring.verify(TopicKind.FACTS, message.key, raw, message.headers)
        if fault is not None:
            await self._reject(raw, origin, fault, fault_error(fault), "not signed by a worker")
        else:
            try:
                self.engine.apply(self.segments, origin.partition, origin.offset, raw)
            except Exception as exc:
                await self._failed(raw, origin, exc)
            else:
                # The site's heartbeat: a verified, applied batch (duplicates too).
                self.engine.silence.arrived(origin.partition, _site(message.key))
        self.health.processed(origin.topic, origin.partition, origin.offset)

    async def _failed(self, raw: bytes, origin: MessageOrigin, exc: Exception) -> None:
        if isinstance(exc, UnreadableState):  # decoding failed: nothing was applied
            reason = RejectReason.UNREADABLE_FACTS
            error = FieldError("<root>", reason.value, "not a fact batch this release reads")
        else:
            reason, error = RejectReason.INTERNAL_ERROR, internal_error(exc)
        await self._reject(raw, origin, reason, error, type(exc).__name__)
        if reason is RejectReason.INTERNAL_ERROR:
            # The exception may have left records or totals half-updated;
            # the changelog holds exactly what was applied.
            self.engine.rebuild(self.segments.items(), self.active_partitions())

    async def _reject(
        self, raw: bytes, origin: MessageOrigin, reason: RejectReason, error: FieldError, why: str
    ) -> None:
        log.error(
            "fact batch at %s[%d] offset %d dead-lettered (%s: %s)",
            origin.topic, origin.partition, origin.offset, reason.value, why,
        )  # fmt: skip
        letter = dead_letter(
            raw, [error], reason.value, origin, max_value_bytes=self.max_value_bytes
        )
        await write_dead_letters(self.deadletter, [letter], self.policy)
        self.engine.metrics.fact_batches_dead_lettered.labels(reason.value).inc()


async def write_dead_letters(
    topic: Any,
    letters: Sequence[DeadLetter],
    policy: FailurePolicy,
    on_ack: Callable[[], None] | None = None,
) -> None:
    records = [Outgoing(None, letter.value, letter.headers) for letter in letters]
    await send_all(
        topic, records, policy=policy, what="dead letters", shrink=_shrink, on_ack=on_ack
    )


def _shrink(record: Outgoing) -> Outgoing:
    letter = shrunk(DeadLetter(record.value, record.headers or []), SHRUNK_VALUE_BYTES)
    return Outgoing(None, letter.value, letter.headers)


async def publish_outbox(
    monitor: DriftMonitor,
    topic: Any,
    policy: FailurePolicy | None = None,
    lookback_topic: Any | None = None,
) -> int:
    """Send the monitor's queued messages keyed by site; return how many went out.

    Look-back lists first, on their own topic (`lookback_topic`; None: kept
    queued), then the drift messages. Returns once the broker acknowledged
    every one (retrying meanwhile). If the loop is cancelled first (the
    worker stops), every taken message goes back to its outbox in order:
    ids are stable, so the alerting service drops the ones that did arrive.
    """
    policy = policy or FailurePolicy()
    if lookback_topic is not None:
        lists = monitor.take_lookbacks()
        records = [Outgoing(site_id, m.model_dump_json().encode()) for site_id, m in lists]
        try:
            await send_all(lookback_topic, records, policy=policy, what="look-back lists")
        except BaseException:
            monitor.requeue_lookbacks(lists)
            raise
    taken = monitor.take_outbox()
    records = [Outgoing(site_id, m.model_dump_json().encode()) for site_id, m in taken]
    try:
        await send_all(topic, records, policy=policy, what="drift messages")
    except BaseException:
        monitor.requeue(taken)
        raise
    return len(taken)


def _value(event: EventT[Any]) -> bytes:
    # A tombstone (null value) arrives as None; as b"" it is dead-lettered
    # like any empty message (invalid_json) instead of raising in triage.
    value = event.value
    return b"" if value is None else value


def _site(key: Any) -> str:
    # Fact batches are keyed by site id, as raw bytes.
    return key.decode() if isinstance(key, bytes) else str(key)


def _origin(event: EventT[Any]) -> MessageOrigin:
    message = event.message
    return MessageOrigin(message.topic, message.partition, message.offset)
