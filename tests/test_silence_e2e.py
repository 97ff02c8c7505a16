"""End-to-end stream silence: a real worker, Redis, the alerting service and Alertmanager.

Two sites send events at a steady rate (the silence settings scaled from
days to seconds). One stops. Its silence alert must fire, once, in a real
Alertmanager and on the webhook, and the worker's gauges must say it is
silent; the site that kept sending must not. When the silent site's
events come back, the alert must resolve (gone from Alertmanager's active
alerts, RESOLVED on the webhook, ends_at set in the alert state), again
once. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from spinewatch.adapters.kafka_clients import started
from spinewatch.alerting.process import running_alerting
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.contracts import Indication, ProcedureType
from spinewatch.demo.synthetic.cohort import SiteProfile, encode, generate_cohort
from spinewatch.engine.settings import Settings
from tests.conftest import SettingsFactory
from tests.servers import Alertmanager
from tests.support import consume, running_worker, scaled, scrape_async, value, wait_until
from tests.test_alerting import Webhook

pytestmark = pytest.mark.e2e

# Seconds for days: a batch every 0.2 s, silent after max(8 gaps, the floor).
PACE_S = 0.2
FLOOR_S = 3.0
MIN_ARRIVALS = 10


def _settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(
        drift_metrics=(),
        drift_vas_timepoints=(),
        drift_interval_s=0.2,
        silence_multiple=8,
        # Scaled: a stalled machine must not make the steady site look silent.
        silence_min_s=scaled(FLOOR_S),
        silence_min_arrivals=MIN_ARRIVALS,
        silence_window_s=120.0,  # arrivals closer than 0.12 s count once
    )


def _events(site: str, seed: int) -> Iterator[bytes]:
    profile = SiteProfile(site, 200, {(ProcedureType.PVP, Indication.OSTEOPOROTIC): 1.0})
    cohort = generate_cohort(seed, [profile], duplicate_share=0, malformed=0, retractions=0)
    for event in cohort.events:
        yield encode(event)


class Sender:
    """Sends one site's events, one message each PACE_S, while `on` is set."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, site: str, seed: int) -> None:
        self.producer, self.topic, self.site = producer, topic, site
        self.events = _events(site, seed)
        self.on = asyncio.Event()
        self.parked = asyncio.Event()  # waiting for `on`: no send in flight
        self.sent = 0

    async def run(self) -> None:
        while True:
            if not self.on.is_set():
                self.parked.set()
            await self.on.wait()
            self.parked.clear()
            await self.producer.send_and_wait(self.topic, next(self.events), key=self.site.encode())
            self.sent += 1
            await asyncio.sleep(PACE_S)  # the site's pace, not a wait for a result

    async def stop(self) -> None:
        """Stop sending; return once no send is in flight (one may be, when asked)."""
        self.on.clear()
        await asyncio.wait_for(self.parked.wait(), scaled(30))


@contextlib.asynccontextmanager
async def _sending(*senders: Sender) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(s.run()) for s in senders]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _silence_alerts(api: Alertmanager, site: str) -> list[dict[str, Any]]:
    alerts = await asyncio.to_thread(api.alerts)
    return [
        a
        for a in alerts
        if a["labels"].get("alertname") == "SpinewatchSiteSilent" and a["labels"]["site"] == site
    ]


def _pages(webhook: Webhook, site: str) -> list[dict[str, Any]]:
    return [p for p in webhook.received if p["alert"]["fingerprint"] == f"silence.{site}"]


async def test_a_site_that_stops_sending_fires_the_silence_alert_and_resolves_on_return(
    make_settings: SettingsFactory,
    kafka_bootstrap: str,
    redis_url: str,
    alertmanager_api: Alertmanager,
) -> None:
    settings = _settings(make_settings)
    webhook = Webhook()
    await webhook.start()
    alerting = AlertingSettings(
        kafka_brokers=kafka_bootstrap, app_id=settings.app_id, redis_url=redis_url,
        key_prefix=settings.app_id, alertmanager_urls=(alertmanager_api.url,),
        webhook_urls=(webhook.url,), http_port=0, resend_interval_s=1.0, poll_interval_s=0.1,
        dashboard_url="http://grafana.test/d/spinewatch", signing_key=settings.signing_key,
    )  # fmt: skip
    try:
        async with (
            running_worker(settings, kafka_bootstrap) as worker,
            running_alerting(alerting) as running,
            started(AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)) as producer,
        ):
            quiet = Sender(producer, settings.events_topic, "quiet", 18)
            steady = Sender(producer, settings.events_topic, "steady", 19)
            metrics_url = f"{worker.metrics.url}/metrics"

            async def gauges() -> dict[Any, float]:
                return await scrape_async(metrics_url)

            async with _sending(quiet, steady):
                quiet.on.set()
                steady.on.set()
                # Both sites judged: enough arrivals held for a usual gap.
                await wait_until(
                    gauges,
                    lambda g: all(
                        value(g, "spinewatch_site_silence_threshold_seconds", site=s) > 0
                        for s in ("quiet", "steady")
                    ),
                    60,
                    "both sites judged",
                )
                assert await _silence_alerts(alertmanager_api, "quiet") == []
                assert _pages(webhook, "quiet") == []

                await quiet.stop()  # the site stops sending
                stopped_after = quiet.sent
                firing = await wait_until(
                    lambda: _silence_alerts(alertmanager_api, "quiet"),
                    lambda a: len(a) == 1,
                    60,
                    "the silence alert in Alertmanager",
                )
                assert firing[0]["labels"] == {
                    "alertname": "SpinewatchSiteSilent",
                    "severity": "warning",
                    "site": "quiet",
                }
                assert "no events received since" in firing[0]["annotations"]["summary"]
                await wait_until(
                    lambda: _async(lambda: _pages(webhook, "quiet")),
                    lambda p: [x["transition"] for x in p] == ["firing"],
                    30,
                    "the firing page on the webhook",
                )
                during = await gauges()
                assert value(during, "spinewatch_site_silent", site="quiet") == 1
                assert value(during, "spinewatch_site_silent", site="steady") == 0
                threshold = value(during, "spinewatch_site_silence_threshold_seconds", site="quiet")
                assert threshold >= scaled(FLOOR_S)
                assert (
                    value(during, "spinewatch_site_seconds_since_last_event", site="quiet")
                    > threshold
                )
                assert quiet.sent == stopped_after, "the silent site sent meanwhile"

                quiet.on.set()  # its events come back
                await wait_until(
                    lambda: _silence_alerts(alertmanager_api, "quiet"),
                    lambda a: a == [],
                    60,
                    "the silence alert resolved in Alertmanager",
                )
                pages = await wait_until(
                    lambda: _async(lambda: _pages(webhook, "quiet")),
                    lambda p: [x["transition"] for x in p] == ["firing", "resolved"],
                    30,
                    "the resolution on the webhook",
                )
                assert pages[1]["text"].startswith("[RESOLVED] [warning] quiet: no events")
                after = await wait_until(
                    gauges,
                    lambda g: value(g, "spinewatch_site_silent", site="quiet") == 0,
                    30,
                    "the gauge back to 0",
                )
                assert value(after, "spinewatch_site_seconds_since_last_event", site="quiet") < (
                    threshold
                )
                stored = await running.service.store.alert("silence.quiet")
                assert stored is not None
                assert stored.status == "resolved"
                assert stored.ends_at is not None
                # The site that never stopped never warned.
                assert await running.service.store.alert("silence.steady") is None
                assert _pages(webhook, "steady") == []
                # Every delivery (the audit records included) made before stopping.
                await wait_until(
                    running.service.store.pending_deliveries, lambda n: n == 0, 30, "empty outbox"
                )
    finally:
        await webhook.stop()
    # The audit topic, the third receiver: the same two transitions (at least
    # once: distinct transition ids, in order, are what happened).
    records = await consume(kafka_bootstrap, alerting.alerts_topic, 10_000, timeout_s=3)
    audit = [json.loads(r.value) for r in records if r.value]
    quiet_audit = {a["id"]: a for a in audit if a["fingerprint"] == "silence.quiet"}
    assert [a["transition"] for a in quiet_audit.values()] == ["firing", "resolved"]
    assert not [a for a in audit if a["fingerprint"] == "silence.steady"]


async def _async(probe: Any) -> Any:
    return probe()
