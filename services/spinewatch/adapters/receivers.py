"""Where alerts go: Alertmanager API v2, a JSON webhook, the Kafka audit topic.

Each receiver answers one delivery with a typed decision, so the caller
never guesses from an exception: `DELIVERED`; `RETRY` (connection refused,
timeout, 5xx, 429: the receiver is down or busy, try again later with
backoff); `REJECTED` (other 4xx: the payload or configuration is wrong,
retrying cannot help; logged with the receiver's reason and dropped).
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import aiohttp
from aiokafka import AIOKafkaProducer

from spinewatch.domain.alerts.model import (
    Alert,
    Transition,
    alertmanager_payload,
    audit_record,
    webhook_payload,
)

log = logging.getLogger(__name__)


class Decision(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Result:
    decision: Decision
    detail: str = ""


class Receiver(Protocol):
    name: str

    async def send(
        self, alert: Alert, transition: Transition, now: datetime, transition_id: str
    ) -> Result: ...


def _decide(status: int, body: str) -> Result:
    if 200 <= status < 300:
        return Result(Decision.DELIVERED)
    if status == 429 or status >= 500:
        return Result(Decision.RETRY, f"HTTP {status}")
    return Result(Decision.REJECTED, f"HTTP {status}: {body[:300]}")


class _HttpReceiver:
    def __init__(self, name: str, url: str, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.url = url
        self._session = session

    async def _post(self, payload: Any) -> Result:
        try:
            async with self._session.post(self.url, json=payload) as response:
                return _decide(response.status, await response.text())
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Result(Decision.RETRY, f"{type(exc).__name__}: {exc}"[:300])


class AlertmanagerReceiver(_HttpReceiver):
    """`POST /api/v2/alerts`; a resolved alert is sent with its `endsAt`."""

    def __init__(
        self, name: str, base_url: str, session: aiohttp.ClientSession, resend_interval_s: float
    ) -> None:
        super().__init__(name, f"{base_url.rstrip('/')}/api/v2/alerts", session)
        self._resend_interval_s = resend_interval_s

    async def send(
        self, alert: Alert, transition: Transition, now: datetime, transition_id: str
    ) -> Result:
        return await self._post([alertmanager_payload(alert, now, self._resend_interval_s)])


class WebhookReceiver(_HttpReceiver):
    """A generic JSON webhook with Slack-compatible `text`."""

    async def send(
        self, alert: Alert, transition: Transition, now: datetime, transition_id: str
    ) -> Result:
        # Delivery is at least once: the id lets a receiver drop a repeat.
        return await self._post(webhook_payload(alert, transition) | {"id": transition_id})


class AuditReceiver:
    """Every transition, keyed by the alert's fingerprint, on the `alerts` topic."""

    def __init__(self, name: str, topic: str, producer: AIOKafkaProducer) -> None:
        self.name = name
        self.topic = topic
        self._producer = producer

    async def send(
        self, alert: Alert, transition: Transition, now: datetime, transition_id: str
    ) -> Result:
        # At least once (a timed-out send may have landed): readers dedupe by id.
        record = audit_record(alert, transition) | {"id": transition_id, "at": now.isoformat()}
        try:
            await self._producer.send_and_wait(
                self.topic, json.dumps(record).encode(), key=alert.fingerprint.encode()
            )
        except Exception as exc:
            return Result(Decision.RETRY, f"{type(exc).__name__}: {exc}"[:300])
        return Result(Decision.DELIVERED)
