"""End-to-end: retracting a pulmonary cement embolism withdraws its page everywhere.

A real worker on the session broker, the alerting service on a real
redis-server, a real Alertmanager that notifies a pager (a webhook on
loopback, `send_resolved: true`), and the service's own webhook and audit
topic. The embolism pages; its retraction must resolve the alert in
Alertmanager (its own resolved notification, `endsAt` set and not in the
future), reach the webhook as a withdrawal with its reason, and be on the
audit topic once. Reported again, it pages again; a restarted worker
re-announces the withdrawal, and nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spinewatch.alerting.process import running_alerting
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.contracts import Event
from spinewatch.engine.settings import Settings
from tests.conftest import SettingsFactory
from tests.samples_sentinel import Pathway
from tests.servers import Alertmanager, alertmanager
from tests.support import consume, produce_keyed, running_worker, scrape_async, sum_by, wait_until
from tests.test_alerting import Webhook

pytestmark = pytest.mark.e2e

SITE = "embolism-site"
SENTINEL = "SpinewatchSentinelEvent"

# Alertmanager pages `pager` for every sentinel and tells it when one resolves.
PAGER_CONFIG = """
route:
  receiver: pager
  group_by: ["sentinel_id"]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: pager
    webhook_configs:
      - url: "{url}"
        send_resolved: true
"""


async def _send(settings: Settings, bootstrap: str, *events: Event) -> None:
    messages = [(SITE.encode(), e.model_dump_json().encode()) for e in events]
    await produce_keyed(bootstrap, settings.events_topic, messages)


async def _sentinels(api: Alertmanager) -> dict[str, dict[str, Any]]:
    """Active sentinel alerts of the site in Alertmanager, by sentinel id."""
    alerts = await asyncio.to_thread(api.alerts)
    return {
        a["labels"]["sentinel_id"]: a
        for a in alerts
        if a["labels"].get("alertname") == SENTINEL and a["labels"].get("site") == SITE
    }


def _notified(pager: Webhook, sentinel_id: str, status: str) -> list[dict[str, Any]]:
    """Alerts Alertmanager notified the pager of, for one sentinel, in one status."""
    return [
        alert
        for notification in pager.received
        for alert in notification["alerts"]
        if alert["labels"].get("sentinel_id") == sentinel_id and alert["status"] == status
    ]


async def test_retracting_a_pulmonary_embolism_withdraws_its_page_on_every_receiver(
    make_settings: SettingsFactory, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(drift_metrics=(), drift_vas_timepoints=(), drift_interval_s=0.2)
    pager, hook = Webhook(), Webhook()
    await pager.start()
    await hook.start()
    case = Pathway(SITE, 0)
    embolism = case.embolism()
    try:
        with alertmanager(tmp_path, PAGER_CONFIG.format(url=pager.url)) as api:
            alerting = AlertingSettings(
                kafka_brokers=kafka_bootstrap, app_id=settings.app_id, redis_url=redis_url,
                key_prefix=settings.app_id, alertmanager_urls=(api.url,),
                webhook_urls=(hook.url,), http_port=0, resend_interval_s=1.0,
                poll_interval_s=0.1, signing_key=settings.signing_key,
            )  # fmt: skip
            async with running_alerting(alerting) as running:
                service = running.service
                async with running_worker(settings, kafka_bootstrap):
                    await _send(settings, kafka_bootstrap, case.procedure(), embolism)
                    paged = await wait_until(
                        lambda: _sentinels(api), lambda a: len(a) >= 1, 60, "the embolism paged"
                    )
                    ((sentinel_id, alert),) = paged.items()
                    assert alert["labels"]["metric"] == "pulmonary_cement_embolism_rate"
                    assert alert["labels"]["severity"] == "critical"
                    ends = datetime.fromisoformat(alert["endsAt"])
                    assert ends > datetime.now(UTC) + timedelta(hours=23)
                    await wait_until(
                        lambda: _async(lambda: _notified(pager, sentinel_id, "firing")),
                        bool, 30, "Alertmanager paging the pager",
                    )  # fmt: skip

                    await _send(settings, kafka_bootstrap, case.retraction(embolism.event_id))
                    await wait_until(
                        lambda: _sentinels(api), lambda a: sentinel_id not in a, 60,
                        "the alert gone from Alertmanager's active alerts",
                    )  # fmt: skip
                    (resolved,) = await wait_until(
                        lambda: _async(lambda: _notified(pager, sentinel_id, "resolved")),
                        bool, 30, "Alertmanager's resolved notification",
                    )  # fmt: skip
                    assert datetime.fromisoformat(resolved["endsAt"]) <= datetime.now(UTC)
                    assert resolved["endsAt"] != "0001-01-01T00:00:00Z"
                    assert "withdrawn" in resolved["annotations"]
                    await wait_until(
                        lambda: _async(hook.transitions), lambda t: "withdrawn" in t, 30,
                        "the withdrawal on the webhook",
                    )  # fmt: skip

                    # Reported again: a new sentinel id, paged again.
                    await _send(settings, kafka_bootstrap, case.embolism())
                    again = await wait_until(
                        lambda: _sentinels(api), lambda a: len(a) >= 1, 60, "the new report paged"
                    )
                    assert sentinel_id not in again

                # A restarted worker re-announces the withdrawal (the same id):
                # recorded as a duplicate, sent to nobody again.
                before = await _duplicates(running.url)
                async with running_worker(settings, kafka_bootstrap):
                    await wait_until(
                        lambda: _withdrawals(kafka_bootstrap, settings.drift_topic),
                        lambda found: len(found) >= 2, 60, "the re-announced withdrawal",
                    )  # fmt: skip
                    await wait_until(
                        lambda: _duplicates(running.url), lambda n: n >= before + 2, 30,
                        "the re-announcements recorded as duplicates",
                    )  # fmt: skip
                await wait_until(service.store.pending_deliveries, lambda n: n == 0, 30, "outbox")
    finally:
        await pager.stop()
        await hook.stop()

    withdrawals = await _withdrawals(kafka_bootstrap, settings.drift_topic)
    assert len({w["withdrawal_id"] for w in withdrawals}) == 1
    assert {(w["sentinel_id"], w["reason"]) for w in withdrawals} == {(sentinel_id, "retracted")}
    assert hook.transitions() == ["firing", "withdrawn", "firing"]
    text = hook.received[1]["text"]
    assert text.startswith(f"[WITHDRAWN] [critical] {SITE}: pulmonary cement embolism")
    assert "the complication report was retracted" in text
    # The audit topic: the withdrawal once, with its reason.
    records = await consume(kafka_bootstrap, alerting.alerts_topic, 10_000, timeout_s=3)
    audit = [json.loads(r.value) for r in records if r.value]
    withdrawn = [a for a in audit if a["transition"] == "withdrawn"]
    assert len(withdrawn) == 1
    (record,) = withdrawn
    assert record["fingerprint"] == f"sentinel.{sentinel_id}"
    assert record["withdrawn_reason"] == "retracted"
    assert record["status"] == "resolved"
    assert "retracted" in record["annotations"]["withdrawn"]
    firings = [a for a in audit if a["transition"] == "firing"]
    assert len({a["fingerprint"] for a in firings}) == 2  # the first report and the new one
    raw = json.dumps(audit) + json.dumps(hook.received)
    assert str(case.common["procedure_id"]) not in raw


async def _async(read: Any) -> Any:
    return read()


async def _duplicates(url: str) -> float:
    samples = await scrape_async(f"{url}/metrics")
    return sum_by(samples, "spinewatch_drift_messages_total", outcome="duplicate")


async def _withdrawals(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    records = await consume(bootstrap, topic, 10_000, timeout_s=2)
    messages = [json.loads(r.value) for r in records if r.value]
    return [m for m in messages if m["event_type"] == "drift.sentinel_withdrawn"]
