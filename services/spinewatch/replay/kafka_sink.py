"""Replaying straight to the events topic: one record per event, done once acknowledged.

`acks="all"`: the broker answers once every in-sync replica holds the
record, so a chunk counted in the state file survives the loss of a
broker. Records are keyed by procedure_id, so one procedure's events keep
their order within a partition (the gateway keys them the same way).

Nothing here deduplicates, and nothing needs to: a record sent by an
interrupted run and sent again on resumption reaches the outcomes engine
twice, and the engine keeps each procedure's events as a set keyed by
event_id, so the second copy is a no-op counted only in
`spinewatch_events_duplicate_total` (README, "Exact under at-least-once
delivery, by construction"; `domain/outcomes/records.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from spinewatch.adapters.kafka_clients import started
from spinewatch.adapters.kafka_security import KafkaSecurity
from spinewatch.errors import ReplayError, SinkUnavailable
from spinewatch.replay.records import Outcome, Outgoing, Status
from spinewatch.runtime.failures import FailurePolicy

log = logging.getLogger(__name__)

_ACCEPTED = Outcome(Status.ACCEPTED)


def build_producer(
    brokers: str, security: KafkaSecurity | None = None, request_timeout_s: float = 30.0
) -> AIOKafkaProducer:
    """The replay's one Kafka client: every setting of it is here."""
    return AIOKafkaProducer(
        bootstrap_servers=brokers,
        client_id="spinewatch-replay",
        acks="all",
        # Not idempotent: Tansu does not support producer ids reliably, and a
        # record written twice is harmless downstream (see the module docstring).
        enable_idempotence=False,
        linger_ms=5,
        request_timeout_ms=int(request_timeout_s * 1000),
        **(security.aiokafka_kwargs() if security is not None else {}),
    )


class KafkaSink:
    """Sends chunks of events; `send` returns once the broker acknowledged each one."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        give_up_after_s: float,
        policy: FailurePolicy | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.give_up_after_s = give_up_after_s
        self.policy = policy or FailurePolicy()

    async def send(self, items: Sequence[Outgoing]) -> list[Outcome]:
        pending = list(items)
        attempt = 0
        since = time.monotonic()
        while pending:
            failed = await self._attempt(pending, deadline=since + self.give_up_after_s)
            if len(failed) < len(pending):
                since = time.monotonic()  # the broker is taking records: not stuck
            pending = [item for item, _ in failed]
            if not pending:
                break
            first = failed[0][1]
            if not _transient(first):
                raise ReplayError(f"the broker refused an event: {type(first).__name__}")
            if time.monotonic() - since >= self.give_up_after_s:
                raise SinkUnavailable(
                    f"the broker did not acknowledge {len(pending)} events for "
                    f"{self.give_up_after_s:g} s (last: {type(first).__name__})"
                )
            attempt += 1
            delay = self.policy.backoff_s(attempt)
            log.warning(
                "%d events not acknowledged (%s); again in %.1f s",
                len(pending), type(first).__name__, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)
        return [_ACCEPTED] * len(items)

    async def _attempt(
        self, items: Sequence[Outgoing], deadline: float
    ) -> list[tuple[Outgoing, BaseException]]:
        """Send each item; the ones not acknowledged by `deadline`, with why.

        aiokafka retries a broker that went away by itself until its request
        timeout, so the wait is bounded here: the give-up time is ours.
        """
        failed: list[tuple[Outgoing, BaseException]] = []
        acks: list[tuple[Outgoing, asyncio.Future[Any]]] = []
        for item in items:
            try:
                send = self.producer.send(self.topic, item.payload, item.key)
                acks.append((item, await asyncio.wait_for(send, _left(deadline))))
            except (KafkaError, TimeoutError) as exc:
                failed.append((item, exc))
        if acks:
            await asyncio.wait([ack for _, ack in acks], timeout=_left(deadline))
        for item, ack in acks:
            if not ack.done():
                # Still in the producer: it may yet land (a duplicate downstream,
                # harmless); its outcome is read, never left unretrieved.
                ack.add_done_callback(_retrieve)
                failed.append((item, TimeoutError()))
            elif ack.cancelled():
                failed.append((item, asyncio.CancelledError()))
            elif (problem := ack.exception()) is not None:
                failed.append((item, problem))
        return failed


def _left(deadline: float) -> float:
    return max(0.001, deadline - time.monotonic())


def _retrieve(ack: asyncio.Future[Any]) -> None:
    if not ack.cancelled():
        ack.exception()


def _transient(exc: BaseException) -> bool:
    """Worth sending again: the broker may take it later (aiokafka marks most such errors).

    A record that expired in the producer's queue (KafkaTimeoutError: no
    broker took it within the request timeout) is not marked retriable by
    aiokafka, but it is exactly what a broker that went away looks like.
    """
    if isinstance(exc, KafkaTimeoutError | TimeoutError | asyncio.CancelledError):
        return True
    return bool(getattr(exc, "retriable", False))


@contextlib.asynccontextmanager
async def kafka_sink(
    brokers: str,
    topic: str,
    give_up_after_s: float,
    security: KafkaSecurity | None = None,
) -> AsyncIterator[KafkaSink]:
    """A started sink on `topic`, checked to exist; the producer stopped however the block ends."""
    running = False
    try:
        # The request timeout bounds how long stopping the producer waits to
        # flush records no broker takes: a replay that gave up ends then.
        timeout_s = min(30.0, give_up_after_s)
        async with started(build_producer(brokers, security, timeout_s)) as producer:
            running = True
            try:
                await asyncio.wait_for(producer.partitions_for(topic), give_up_after_s)
            except (KafkaError, TimeoutError):
                raise ReplayError(
                    f"topic {topic} not found on {brokers}: is --app-id right, and has a "
                    "worker (or the gateway) created the topics?"
                ) from None
            yield KafkaSink(producer, topic, give_up_after_s)
    except KafkaError as exc:
        if running:
            raise
        raise SinkUnavailable(f"no broker answered at {brokers} ({type(exc).__name__})") from None
