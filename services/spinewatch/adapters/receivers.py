"""Where alerts go: Alertmanager API v2, a JSON webhook, the Kafka audit topic;
and where chart resets go: the signed control topic.

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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import aiohttp
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from spinewatch.adapters.message_signing import Keyring, TopicKind
from spinewatch.contracts.control import ChartReset
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


# An investigation step's record (who, when, why, finding, note), frozen
# when the step was decided; None for the paging transitions.
Step = Mapping[str, Any] | None


class Receiver(Protocol):
    name: str

    async def send(
        self,
        alert: Alert,
        transition: Transition,
        now: datetime,
        transition_id: str,
        step: Step = None,
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
        self,
        alert: Alert,
        transition: Transition,
        now: datetime,
        transition_id: str,
        step: Step = None,
    ) -> Result:
        return await self._post([alertmanager_payload(alert, now, self._resend_interval_s)])


class WebhookReceiver(_HttpReceiver):
    """A generic JSON webhook with Slack-compatible `text`."""

    async def send(
        self,
        alert: Alert,
        transition: Transition,
        now: datetime,
        transition_id: str,
        step: Step = None,
    ) -> Result:
        # Delivery is at least once: the id lets a receiver drop a repeat.
        # An investigation step's text names who and the finding, never its free text.
        return await self._post(webhook_payload(alert, transition, step) | {"id": transition_id})


class AuditReceiver:
    """Every transition, keyed by the alert's fingerprint, on the `alerts` topic."""

    def __init__(self, name: str, topic: str, producer: AIOKafkaProducer) -> None:
        self.name = name
        self.topic = topic
        self._producer = producer

    async def send(
        self,
        alert: Alert,
        transition: Transition,
        now: datetime,
        transition_id: str,
        step: Step = None,
    ) -> Result:
        # At least once (a timed-out send may have landed): readers dedupe by id.
        record = audit_record(alert, transition) | {"id": transition_id, "at": now.isoformat()}
        if step is not None:
            # The audit log is where an investigation's full record goes,
            # its reason and note included (as decided, not as of delivery).
            record["step"] = dict(step)
        try:
            await self._producer.send_and_wait(
                self.topic, json.dumps(record).encode(), key=alert.fingerprint.encode()
            )
        except Exception as exc:
            return Result(Decision.RETRY, f"{type(exc).__name__}: {exc}"[:300])
        return Result(Decision.DELIVERED)


CONTROL_RECEIVER = "control"


class ControlReceiver:
    """Chart resets, signed, on `{app}-control` keyed by site (the workers apply them).

    The reset was decided and queued with its investigation's closing (the
    outbox in Redis), so a broker outage delays it and never loses it;
    each retry publishes the same bytes under the same `reset_id`.
    """

    name = CONTROL_RECEIVER

    def __init__(self, topic: str, producer: AIOKafkaProducer, keyring: Keyring) -> None:
        self.topic = topic
        self._producer = producer  # acks=all (alerting/process.py)
        self._keyring = keyring

    async def send(
        self,
        alert: Alert,
        transition: Transition,
        now: datetime,
        transition_id: str,
        step: Step = None,
    ) -> Result:
        try:
            reset = ChartReset.model_validate_json(json.dumps((step or {}).get("reset")))
        except ValidationError as exc:  # a bug, not an outage: retrying cannot help
            return Result(Decision.REJECTED, f"not a chart reset: {exc.error_count()} errors")
        key, value = reset.site_id.encode(), reset.model_dump_json().encode()
        header = self._keyring.sign(TopicKind.CONTROL, key, value)
        try:
            await self._producer.send_and_wait(self.topic, value, key=key, headers=[header])
        except Exception as exc:
            return Result(Decision.RETRY, f"{type(exc).__name__}: {exc}"[:300])
        return Result(Decision.DELIVERED)
