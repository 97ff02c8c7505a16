"""Writing events to the events topic, each answered only once the broker has it.

`acks="all"`: the leader answers only after every in-sync replica holds
the record, so an event answered `accepted` survives the loss of a broker.
The producer is not idempotent (no `enable_idempotence`): the test broker
(Tansu) does not support producer ids reliably, and nothing is lost
without it: a write that timed out may still land, the gateway answers
`retry`, the sender re-sends, and the engine ignores the second copy (it
keeps each procedure's events as a set keyed by event_id).

Records are keyed by procedure_id, so one procedure's events stay in order
within a partition; the engine re-keys validated facts by site itself
(`engine/ingest.py`, `ingest_batch`).

The client is started in a supervised loop, not before the server: a
gateway started while the broker is away serves `/readyz` (red, naming the
broker) and answers writes with 503 until the broker is back, instead of
crash-looping. `build_producer` is the one place the aiokafka client is
configured (security settings are wired in there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from uuid import UUID

from aiokafka import AIOKafkaProducer

from spinewatch.adapters.kafka_admin import ensure_topics
from spinewatch.adapters.kafka_clients import stop_client
from spinewatch.errors import TopicMismatch
from spinewatch.gateway.settings import GatewaySettings
from spinewatch.runtime.failures import FailurePolicy
from spinewatch.runtime.health import Check
from spinewatch.runtime.supervisor import Heartbeat

log = logging.getLogger(__name__)

_PROBE_INTERVAL_S = 5.0
_TIMED_OUT = "no acknowledgement within the produce timeout"


class NotWritten(Exception):
    """The broker did not acknowledge a write (not connected, timed out, refused)."""


def build_producer(settings: GatewaySettings) -> AIOKafkaProducer:
    """The gateway's Kafka client: acks=all, requests bounded by the produce timeout."""
    timeout_ms = int(settings.produce_timeout_s * 1000)
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_brokers,
        acks="all",
        enable_idempotence=False,
        # A record not delivered within the timeout fails its future, so the
        # answer (503) and what the client does agree about as nearly as can be.
        request_timeout_ms=timeout_ms,
        max_request_size=max(1 << 20, settings.max_body_bytes * 2),
        # TLS and SASL as the settings' kafka_* fields say (adapters/kafka_security.py).
        **settings.kafka_security.aiokafka_kwargs(),
    )


class EventProducer:
    """Sends events and tracks whether writes are getting through."""

    def __init__(self, settings: GatewaySettings, policy: FailurePolicy | None = None) -> None:
        self.settings = settings
        self.topic = settings.events_topic
        self.policy = policy or FailurePolicy()
        self.client: AIOKafkaProducer | None = None
        self._connect_error = "not connected yet"
        self._last_ack = time.monotonic()
        self._failing_since: float | None = None
        self._broker_answered = 0.0  # monotonic time of the last answered metadata probe

    # -- the supervised loop ------------------------------------------------
    async def run(self, heartbeat: Heartbeat) -> None:
        """Connect (retrying with backoff), make sure the topic exists, then stay connected."""
        attempt = 0
        while self.client is None:
            client = build_producer(self.settings)
            try:
                await client.start()
                await ensure_topics(
                    self.settings.kafka_brokers,
                    [self.topic],
                    self.settings.partitions,
                    security=self.settings.kafka_security,
                    configs=self.settings.topics.configs(),
                    replication_factor=self.settings.replication_factor,
                    partitions_setting="SPINEWATCH_GATEWAY_PARTITIONS",
                )
            except BaseException as exc:  # the broker is away: readiness says so, we retry
                await stop_client(client)  # a start cut short has opened connections
                if not isinstance(exc, Exception) or isinstance(exc, TopicMismatch):
                    # Stopping; or topics other than the settings say, which no
                    # retry mends: the supervisor logs it, /healthz turns red
                    # and the gateway exits (70) after give_up_after_s.
                    raise
                attempt += 1
                error = type(exc).__name__
                if error != self._connect_error:
                    log.warning("gateway: broker not reachable (%s); retrying", error)
                self._connect_error = error
                heartbeat.beat()
                await asyncio.sleep(self.policy.backoff_s(attempt))
            else:
                self.client = client
                self._connect_error = ""
                log.info("gateway: connected to the broker")
        while True:
            # Also what `liveness` compares write failures against.
            await self.probe()
            heartbeat.beat()
            await asyncio.sleep(_PROBE_INTERVAL_S)

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await stop_client(client)

    # -- writing ------------------------------------------------------------
    async def send_all(self, records: Sequence[tuple[UUID, bytes]]) -> list[NotWritten | None]:
        """Write (key, value) records; per record `None` once the broker acknowledged
        THAT record (acks=all), else the `NotWritten` saying why not.

        The records are appended to the client's batches one after another
        and their acknowledgements awaited together, under one deadline of
        `produce_timeout_s` for the whole call. Not one `send_and_wait` task
        per record: with hundreds of those in flight, every task waiting for
        a full partition batch wakes at each drain, finds the next batch full
        too and waits again, and the event loop spent ~90% of a batch
        request's time on those wake-ups (asyncio.wait timers and callbacks).
        """
        client = self.client
        if client is None:
            return [NotWritten(f"broker not connected ({self._connect_error})")] * len(records)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.produce_timeout_s
        fates: list[asyncio.Future[object] | NotWritten] = []
        try:
            async with asyncio.timeout_at(deadline):
                for key, value in records:
                    try:
                        fates.append(await client.send(self.topic, value, key=key.bytes))
                    except Exception as exc:  # refused before sending (closed, too large)
                        fates.append(_refused(exc))
        except TimeoutError:
            pass  # the records not appended yet are answered below
        fates += [NotWritten(_TIMED_OUT)] * (len(records) - len(fates))
        pending = [f for f in fates if isinstance(f, asyncio.Future)]
        try:
            if pending:
                await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
        finally:
            answers = [_fate(f) for f in fates]  # also on cancellation: none left dangling
        if any(a is None for a in answers):
            self._last_ack = time.monotonic()
            self._failing_since = None  # writes are getting through
        elif answers:
            self._failed()
        return answers

    def _failed(self) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()

    # -- health -------------------------------------------------------------
    async def probe(self) -> Check:
        """Readiness: a metadata request to the broker, bounded; the events topic must exist."""
        client = self.client
        if client is None:
            return Check("broker", False, f"not connected ({self._connect_error})", False)
        try:
            async with asyncio.timeout(self.settings.readiness_timeout_s):
                metadata = await client.client.fetch_all_metadata()
        except TimeoutError:
            return Check("broker", False, "no metadata answer within the timeout", False)
        except Exception as exc:
            return Check("broker", False, f"metadata request failed ({type(exc).__name__})", False)
        self._broker_answered = time.monotonic()
        if self.topic not in metadata.topics():
            return Check("broker", False, f"topic {self.topic} does not exist", False)
        return Check("broker", True)

    def liveness(self) -> Check:
        """Wedged: writes failing for `wedged_after_s` although the broker answers metadata.

        A broker that is away is readiness only (a restart would not bring
        it back); a client that keeps failing while the broker answers is
        stuck, and a restart is what helps.
        """
        since = self._failing_since
        now = time.monotonic()
        if since is None:
            return Check("producer", True)
        if now - since > self.settings.wedged_after_s and self._broker_answered > since:
            return Check("producer", False, f"no write acknowledged for {now - since:.0f} s")
        return Check("producer", True)


def _refused(exc: BaseException) -> NotWritten:
    return NotWritten(f"the broker refused the write ({type(exc).__name__})")


def _fate(delivery: asyncio.Future[object] | NotWritten) -> NotWritten | None:
    """None for an acknowledged record; a record still unanswered is abandoned."""
    if isinstance(delivery, NotWritten):
        return delivery
    if not delivery.done():
        # As a cancelled send_and_wait did: it may still land; the sender
        # is answered `retry` and the engine ignores a second copy.
        delivery.cancel()
        return NotWritten(_TIMED_OUT)
    error = delivery.exception()
    return None if error is None else _refused(error)
