"""The alerting service's process: its loops under one supervisor, and its HTTP endpoint.

Loops (each restarted by the supervisor when it raises, with one log line
and a count in `spinewatch_loop_restarts_total`):

* consume: read drift messages (and the look-back lists of
  `{app_id}-lookback`, `alerting/lookback.py`), verify each one's
  signature, and record each in Redis, committing the offsets only after
  Redis recorded them. A
  message whose signature does not verify (written by something without
  the workers' key: `unsigned`, `bad_signature`, `unknown_key`) is never
  recorded: it is dead-lettered on `{app_id}-deadletter` with the reason,
  counted, and logged; it pages nobody. At every (re)start it seeks back
  to the committed offsets, so messages fetched before a failure (Redis
  down mid-batch) are read again: Redis dedupes by message id, and every
  signal pages exactly once. (Without the seek, a restarted consumer would
  go on from its fetch position, past the messages it never recorded.)
* deliver, re-send: the outbox and Alertmanager re-sends (`AlertingService`);
  the outbox also holds the chart resets that closed investigations
  decided, published signed on `{app_id}-control` (the control receiver,
  acks from all in-sync replicas), retried until the broker takes them.
* redis-probe: pings Redis and checks that the state it started with is
  still there (a Redis restarted without persistence has forgotten every
  firing alert and dedupe key: that is said, loudly, not guessed around).
* lag-probe: the drift and look-back topics' lag for this service's consumer group.

`/healthz` and `/readyz` answer from those (see `spinewatch.runtime.health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from spinewatch.adapters.kafka_clients import stop_client
from spinewatch.adapters.kafka_lag import LagProbe
from spinewatch.adapters.message_signing import Keyring, TopicKind, fault_error
from spinewatch.adapters.receivers import (
    AlertmanagerReceiver,
    AuditReceiver,
    ControlReceiver,
    Receiver,
    WebhookReceiver,
)
from spinewatch.adapters.redis_alerts import RedisAlertStore
from spinewatch.adapters.stream_health import StreamHealth, probing
from spinewatch.alerting.identities import Identities
from spinewatch.alerting.service import AlertingService
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.errors import SigningKeyMissing
from spinewatch.runtime.dead_letters import MessageOrigin, dead_letter
from spinewatch.runtime.health import Check
from spinewatch.runtime.supervisor import Heartbeat, LoopBody, Supervisor

log = logging.getLogger(__name__)


@dataclass
class RunningAlerting:
    service: AlertingService
    url: str
    supervisor: Supervisor
    # Set when the supervisor gave up: the process should exit non-zero.
    gave_up: asyncio.Event


NO_SIGNING_KEY = (
    "no signing key: set SPINEWATCH_ALERTING_SIGNING_KEY to the workers' SPINEWATCH_SIGNING_KEY; "
    "drift messages that do not verify with it are never paged"
)
NO_IDENTITIES = (
    "no identity source for the HTTP API (SPINEWATCH_ALERTING_CREDENTIALS_FILE, or "
    "SPINEWATCH_ALERTING_TRUSTED_PROXY_HEADER with SPINEWATCH_ALERTING_TRUSTED_PROXIES): "
    "every request but /metrics, /healthz and /readyz is refused, so nobody can acknowledge"
)


def signing_keyring(settings: AlertingSettings) -> Keyring:
    if settings.signing_key is None:
        raise SigningKeyMissing(NO_SIGNING_KEY)
    return Keyring.from_secrets(settings.signing_key, settings.signing_previous_keys)


@contextlib.asynccontextmanager
async def running_alerting(settings: AlertingSettings) -> AsyncIterator[RunningAlerting]:
    """Start the service on the current loop; stop it on exit.

    Raises SigningKeyMissing without a signing key, and CredentialsError for
    a credentials file that cannot be read, before anything starts.
    """
    keyring = signing_keyring(settings)
    identities = Identities.from_settings(settings)
    if not identities.configured:
        log.warning("%s", NO_IDENTITIES)
    security = settings.kafka_security
    for risk in security.risks():
        log.warning("%s", risk)
    redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
    )
    timeout = aiohttp.ClientTimeout(total=settings.request_timeout_s)
    session = aiohttp.ClientSession(timeout=timeout)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_brokers, acks="all", **security.aiokafka_kwargs()
    )
    consumer = AIOKafkaConsumer(
        settings.drift_topic,
        settings.lookback_topic,
        bootstrap_servers=settings.kafka_brokers,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **security.aiokafka_kwargs(),
    )
    probe = LagProbe(
        settings.kafka_brokers,
        settings.consumer_group,
        (settings.drift_topic, settings.lookback_topic),
        security=security,
    )
    registry = CollectorRegistry()
    gave_up = asyncio.Event()
    supervisor = Supervisor(
        "alerting",
        registry,
        give_up_after_s=settings.give_up_after_s,
        on_give_up=lambda _reason: gave_up.set(),
    )
    runner: web.AppRunner | None = None
    try:
        await redis.ping()
        await producer.start()
        await consumer.start()
        await probe.start()
        service = AlertingService(
            settings,
            RedisAlertStore(redis, settings.key_prefix),
            _receivers(settings, session, producer),
            registry,
            control=ControlReceiver(settings.control_topic, producer, keyring),
        )
        redis_health = RedisHealth(service.store, settings)
        await redis_health.mark()
        stream = StreamHealth(
            registry,
            settings.consumer_group,
            owned=lambda: {(tp.topic, tp.partition) for tp in consumer.assignment()},
            stall_after_s=settings.stall_after_s,
            broker_timeout_s=settings.broker_timeout_s,
            detect_loss=False,  # a lost drift topic costs nothing: Redis dedupes the re-sends
        )
        poll = settings.poll_interval_s
        gate = DriftGate(
            service, keyring, producer, settings.deadletter_topic, settings.lookback_topic
        )
        supervisor.spawn("consume", _consuming(gate, consumer, stream), stale_after_s=30)
        supervisor.spawn("deliver", _every(poll, service.deliver_due), stale_after_s=30)
        supervisor.spawn("re-send", _every(poll, service.resend_due), stale_after_s=30)
        supervisor.spawn("redis-probe", redis_health.loop, stale_after_s=None)
        supervisor.spawn(
            "lag-probe", probing(probe, stream, settings.probe_interval_s), stale_after_s=None
        )
        supervisor.add_checks(stream.checks)
        supervisor.add_checks(redis_health.checks)
        runner = web.AppRunner(service.http_app(identities, supervisor.checks), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.http_host, settings.http_port).start()
        port = runner.addresses[0][1]
        await supervisor.start()
        yield RunningAlerting(service, f"http://{settings.http_host}:{port}", supervisor, gave_up)
    finally:
        await supervisor.stop()
        # Each closer runs whatever the one before it did.
        closers: list[Callable[[], Awaitable[object]]] = [
            probe.stop,
            lambda: stop_client(consumer),
            lambda: stop_client(producer),
            session.close,
            redis.aclose,
        ]
        if runner is not None:
            closers.insert(0, runner.cleanup)
        for close in closers:
            with contextlib.suppress(Exception):
                await close()


def _receivers(
    settings: AlertingSettings, session: aiohttp.ClientSession, producer: AIOKafkaProducer
) -> list[Receiver]:
    receivers: list[Receiver] = [
        AlertmanagerReceiver(f"alertmanager-{i}", url, session, settings.resend_interval_s)
        for i, url in enumerate(settings.alertmanager_urls)
    ]
    receivers += [
        WebhookReceiver(f"webhook-{i}", url, session) for i, url in enumerate(settings.webhook_urls)
    ]
    if settings.audit_topic:
        receivers.append(AuditReceiver("audit", settings.alerts_topic, producer))
    return receivers


class DriftGate:
    """Only drift and look-back messages signed with the workers' key reach the service."""

    def __init__(
        self,
        service: AlertingService,
        keyring: Keyring,
        producer: AIOKafkaProducer,
        topic: str,
        lookback_topic: str,
    ) -> None:
        self.service = service
        self.keyring = keyring
        self.producer = producer
        self.deadletter_topic = topic
        self.lookback_topic = lookback_topic

    async def __call__(self, record: ConsumerRecord[bytes, bytes]) -> None:
        value = record.value or b""  # a tombstone is as unsigned as anything
        lookback = record.topic == self.lookback_topic
        kind = TopicKind.LOOKBACK if lookback else TopicKind.DRIFT
        fault = self.keyring.verify(kind, record.key, value, record.headers)
        if fault is None:
            await (self.service.lookbacks.handle(value) if lookback else self.service.handle(value))
            return
        origin = MessageOrigin(record.topic, record.partition, record.offset)
        letter = dead_letter(value, [fault_error(fault)], fault.value, origin)
        # Raises when the broker does not take it: the consumer restarts and
        # reads the message again (nothing is committed past it meanwhile).
        await self.producer.send_and_wait(
            self.deadletter_topic, letter.value, headers=letter.headers
        )
        rejected = self.service.lookbacks.rejected if lookback else self.service.metrics.rejected
        rejected.labels(fault.value).inc()
        log.error(
            "%s message at %s[%d] offset %d dead-lettered unread (%s): not from a worker",
            kind.value, record.topic, record.partition, record.offset, fault.value,
        )  # fmt: skip


def _consuming(gate: DriftGate, consumer: AIOKafkaConsumer, stream: StreamHealth) -> LoopBody:
    async def run(heartbeat: Heartbeat) -> None:
        # Read again whatever was fetched but not recorded before a failure.
        for tp in consumer.assignment():
            committed = await consumer.committed(tp)
            if committed is not None:
                consumer.seek(tp, committed)
            else:
                await consumer.seek_to_beginning(tp)
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for tp, records in batches.items():
                for record in records:
                    await gate(record)
                    stream.processed(tp.topic, tp.partition, record.offset)
            if batches:
                await consumer.commit()  # after Redis recorded every message
            heartbeat.beat()

    return run


def _every(interval_s: float, step: Callable[[], Awaitable[object]]) -> LoopBody:
    async def run(heartbeat: Heartbeat) -> None:
        while True:
            await step()
            heartbeat.beat()
            await asyncio.sleep(interval_s)

    return run


class RedisHealth:
    """Is Redis answering, and does it still hold the state this process started with?"""

    def __init__(self, store: RedisAlertStore, settings: AlertingSettings) -> None:
        self.store = store
        self.settings = settings
        self.marker = store._key("instance")
        self._answered_at = time.monotonic()
        self._error = ""
        self._state_lost = False

    async def mark(self) -> None:
        # Shared by every alerting process on this Redis: the first one sets it.
        await self.store.redis.set(self.marker, uuid.uuid4().hex, nx=True)

    async def loop(self, heartbeat: Heartbeat) -> None:
        while True:
            try:
                await self.store.redis.ping()
                present = await self.store.redis.exists(self.marker)
            except Exception as exc:  # a probe: the failure is the finding
                self._error = type(exc).__name__
            else:
                self._answered_at = time.monotonic()
                self._error = ""
                if not present and not self._state_lost:
                    self._state_lost = True
                    log.critical(
                        "Redis lost the alert state (its marker key is gone): firing alerts and "
                        "dedupe keys are forgotten; run Redis with persistence (appendonly yes)"
                    )
            heartbeat.beat()
            await asyncio.sleep(self.settings.probe_interval_s)

    def checks(self) -> list[Check]:
        silent = time.monotonic() - self._answered_at
        redis = Check("redis", True)
        if (
            self._error
            or silent > self.settings.redis_timeout_s + 2 * self.settings.probe_interval_s
        ):
            redis = Check(
                "redis",
                False,
                f"unreachable for {silent:.0f} s ({self._error or 'no answer'})",
                False,
            )
        state = Check(
            "redis-state",
            not self._state_lost,
            "Redis restarted without its data: firing alerts and dedupe keys were lost",
            False,
        )
        return [redis, state]
