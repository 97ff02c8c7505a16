"""`drift.silence` messages as alert transitions (`domain/alerts/silence.py`).

A `silent` message records like a chart signal (the Lua `signal` kind):
the first fires the site's silence alert and enqueues a delivery to every
receiver, a repeat while it fires changes nothing, and it is re-sent to
Alertmanager like any firing alert (a silence can last days). A `resumed`
message resolves whatever silence alert of the site is firing (the Lua
`in_control` kind, checked atomically against that alert's id): the worker
that saw the events come back may not be the one that saw them stop
(`domain/drift/silence.py`), so it may not know the silence's id. Both are
deduplicated by the message's silence id and status.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from spinewatch.adapters.redis_alerts import Outcome, RedisAlertStore
from spinewatch.contracts.drift import DriftSilence
from spinewatch.domain.alerts.model import Transition, resolved
from spinewatch.domain.alerts.silence import alert_from_silence, silence_fingerprint

Deliveries = Callable[[str, str, Transition, int], list[tuple[str, dict[str, Any]]]]


async def record_silence(
    store: RedisAlertStore,
    message: DriftSilence,
    deliveries: Deliveries,
    *,
    now: datetime,
    now_ms: int,
    resend_at_ms: int,
    dashboard_url: str,
) -> Outcome:
    message_id = f"{message.silence_id}:{message.status}"
    if message.status == "silent":
        alert = alert_from_silence(message, now, dashboard_url)
        return await store.record(
            message_id,
            "signal",
            alert,
            now_ms=now_ms,
            resend_at_ms=resend_at_ms,
            deliveries=deliveries(message_id, alert.fingerprint, "firing", now_ms),
        )
    fingerprint = silence_fingerprint(message.site_id)
    current = await store.alert(fingerprint)
    if current is None or current.status != "firing":
        return "stale"  # nothing to resolve: the usual answer to a worker's restart
    # Due 1 ms after anything enqueued now, as for a chart's return to control.
    return await store.record(
        message_id,
        "in_control",
        resolved(current, now),
        now_ms=now_ms + 1,
        resend_at_ms=now_ms,
        deliveries=deliveries(message_id, fingerprint, "resolved", now_ms),
    )
