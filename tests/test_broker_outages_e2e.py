"""End-to-end: broker outages. Ridden out where the data survives; loud where it does not.

Measured before: after a broker restart faust's recovery raised
ConsistencyError, 50 new events were accepted by the broker and 0 were
counted, and /healthz showed every partition active throughout.

* A 20 s outage with the data intact (a TCP proxy in front of the broker
  drops every connection and refuses new ones, as a restarting Kafka
  cluster would): the worker and the alerting service say "broker" on
  /readyz meanwhile, and afterwards, with no manual action, every event is
  counted exactly and every sentinel is paged exactly once.
* The embedded (memory) broker restarted on the same port comes back
  empty: the worker's state no longer matches any log. It must say so
  (/readyz red with "broker-data") and exit 70 for a restart rather than
  stay up deaf; the alerting service goes on and pages what comes after.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

from spinewatch.adapters.kafka_admin import ensure_topics
from spinewatch.alerting.process import RunningAlerting, running_alerting
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.contracts import Indication, ProcedureType
from spinewatch.demo.synthetic.cohort import SiteProfile, encode, generate_cohort
from spinewatch.devservers.tansu import EmbeddedBroker, free_port
from spinewatch.domain.alerts.model import SENTINEL_ALERT_NAME
from spinewatch.domain.alerts.policy import SENTINEL_METRICS
from spinewatch.engine.settings import Settings
from tests.conftest import SettingsFactory
from tests.expectation import expected_counts, observed_counts
from tests.probes import failing, health
from tests.support import produce, running_worker, scrape_async, wait_until
from tests.tcp_proxy import TcpProxy
from tests.test_alerting import Webhook
from tests.workers import WorkerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

OUTAGE_S = 20.0


def _cohort() -> list[dict[str, Any]]:
    # Metastases: neurological deficits among them page as sentinel events.
    site = SiteProfile("outage-site", 240, {(ProcedureType.PVP, Indication.METASTASIS): 1.0})
    cohort = generate_cohort(43, [site], duplicate_share=0, malformed=0, retractions=0)
    return list(cohort.events)


def _sentinels(events: list[dict[str, Any]]) -> int:
    return sum(
        counts.get(("spinewatch_outcome_numerator", metric, ""), 0)
        for counts in expected_counts(events).values()
        for metric in SENTINEL_METRICS
    )


@contextmanager
def _broker(port: int | None = None, advertised: str | None = None) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(port=port, advertised=advertised)
    broker.launch()
    try:
        yield broker
    finally:
        broker.terminate()


@asynccontextmanager
async def _alerting(
    settings: Settings, brokers: str, redis_url: str, webhook: Webhook
) -> AsyncIterator[RunningAlerting]:
    alerting = AlertingSettings(
        kafka_brokers=brokers, app_id=settings.app_id, redis_url=redis_url,
        key_prefix=settings.app_id, webhook_urls=(webhook.url,), audit_topic=False,
        http_port=0, poll_interval_s=0.1, probe_interval_s=0.5, broker_timeout_s=3.0,
        signing_key=settings.signing_key,
    )  # fmt: skip
    async with running_alerting(alerting) as running:
        yield running


def _withdrawn(webhook: Webhook) -> int:
    """Sentinel pages withdrawn: a correction (retraction, then a new report) that
    lands in two drift refreshes withdraws the first page and pages the new report."""
    return sum(1 for page in webhook.received if page["transition"] == "withdrawn")


def _pages(webhook: Webhook) -> set[str]:
    """Sentinel pages (a drift chart of these small sites may page too, at its budget)."""
    return {
        page["id"]
        for page in webhook.received
        if page["transition"] == "firing"
        and page["alert"]["labels"]["alertname"] == SENTINEL_ALERT_NAME
    }


async def test_a_20_s_broker_outage_with_data_intact_is_ridden_out(
    make_settings: SettingsFactory, redis_url: str
) -> None:
    events = _cohort()
    first, rest = events[: len(events) // 2], events[len(events) // 2 :]
    assert _sentinels(first) > 0
    proxy = TcpProxy(free_port())
    with _broker(port=proxy.target_port, advertised=proxy.address) as broker:
        proxy.start()
        webhook = Webhook()
        await webhook.start()
        try:
            settings = make_settings(
                kafka_brokers=proxy.address, probe_interval_s=0.5, broker_timeout_s=3.0,
                give_up_after_s=300, drift_interval_s=0.3,
            )  # fmt: skip
            await broker.wait_until_ready()
            await ensure_topics(proxy.address, settings.topics.names(), settings.partitions)
            async with (
                running_worker(settings, proxy.address) as worker,
                _alerting(settings, proxy.address, redis_url, webhook) as alerting,
            ):
                await produce(proxy.address, settings.events_topic, [encode(e) for e in first])
                await _counted(worker.metrics.url, first)
                await wait_until(
                    _pages_of(webhook), lambda n: n >= _sentinels(first), 60, "sentinel pages"
                )
                proxy.cut()
                cut_at = time.monotonic()
                worker_red = await wait_until(
                    lambda: health(worker.metrics.url),
                    lambda a: any(line.startswith("broker: ") for line in failing(a)),
                    30,
                    "the worker's broker check red",
                )
                alerting_red = await wait_until(
                    lambda: health(alerting.url),
                    lambda a: any(line.startswith("broker: ") for line in failing(a)),
                    30,
                    "the alerting broker check red",
                )
                await wait_until(
                    _seconds_since(cut_at), lambda s: s >= OUTAGE_S, OUTAGE_S + 10, "the outage"
                )
                proxy.restore()
                await produce(proxy.address, settings.events_topic, [encode(e) for e in rest])
                await _counted(worker.metrics.url, events, timeout_s=180)
                await wait_until(
                    _pages_of(webhook), lambda n: n >= _sentinels(events), 90, "every sentinel"
                )
                await wait_until(
                    alerting.service.store.pending_deliveries, lambda n: n == 0, 30, "empty outbox"
                )
                worker_green = await wait_until(
                    lambda: health(worker.metrics.url), lambda a: a[0] == 200, 60, "worker green"
                )
                alerting_green = await wait_until(
                    lambda: health(alerting.url), lambda a: a[0] == 200, 60, "alerting green"
                )
        finally:
            await webhook.stop()
            proxy.stop()

    assert worker_red[0] == 503
    assert alerting_red[0] == 503
    assert worker_green[1]["status"] == alerting_green[1]["status"] == "ok"
    # Exactly once: one page per sentinel, however often the rebuilt worker
    # re-announced them after the outage.
    current = _sentinels(events) + _withdrawn(webhook)
    assert len(_pages(webhook)) == current
    firing = [p for p in webhook.received if p["transition"] == "firing"]
    assert len([p for p in firing if p["alert"]["labels"]["alertname"] == SENTINEL_ALERT_NAME]) == (
        current
    )


async def _counted(base: str, events: list[dict[str, Any]], timeout_s: float = 90) -> None:
    expected = expected_counts(events)

    async def observed() -> Any:
        return observed_counts(await scrape_async(f"{base}/metrics"), expected)

    await wait_until(observed, lambda o: o == expected, timeout_s, "exact cohort counts")


def _pages_of(webhook: Webhook) -> Any:
    async def count() -> int:
        return len(_pages(webhook))

    return count


def _seconds_since(start: float) -> Any:
    async def seconds() -> float:
        return time.monotonic() - start

    return seconds


async def test_an_empty_broker_after_a_restart_makes_the_worker_red_then_exit_70(
    make_settings: SettingsFactory, redis_url: str
) -> None:
    events = _cohort()
    first, rest = events[: len(events) // 2], events[len(events) // 2 :]
    port = free_port()
    brokers = f"127.0.0.1:{port}"
    settings = make_settings(
        kafka_brokers=brokers, probe_interval_s=0.5, broker_timeout_s=3.0, give_up_after_s=8.0
    )
    webhook = Webhook()
    await webhook.start()
    workers: list[WorkerProcess] = []
    broker = EmbeddedBroker(port=port)
    try:
        await broker.start()
        await ensure_topics(brokers, settings.topics.names(), settings.partitions)
        async with _alerting(settings, brokers, redis_url, webhook) as alerting:
            worker = WorkerProcess(settings)
            workers.append(worker)
            worker.start()
            await worker.wait_for_partitions()
            await produce(brokers, settings.events_topic, [encode(e) for e in first])
            await _counted(worker.url, first)
            await wait_until(
                _pages_of(webhook), lambda n: n >= _sentinels(first), 60, "sentinel pages"
            )
            broker.terminate()  # a memory broker: everything it held is gone
            broker = EmbeddedBroker(port=port)
            await broker.start()
            red = await wait_until(
                lambda: health(worker.url),
                lambda a: any(line.startswith("broker-data: ") for line in failing(a)),
                60,
                "the worker's broker-data check red",
            )
            exit_code = await wait_until(
                _exit_code(worker), lambda code: code is not None, 60, "the worker's exit"
            )
            # What an orchestrator does next: a fresh worker, on what the broker has now.
            fresh = WorkerProcess(settings)
            workers.append(fresh)
            fresh.start()
            await fresh.wait_for_partitions()
            await produce(brokers, settings.events_topic, [encode(e) for e in rest])
            await _counted(fresh.url, rest)
            await wait_until(
                _pages_of(webhook),
                lambda n: n >= _sentinels(first) + _sentinels(rest),
                90,
                "the sentinels after the restart",
            )
            await wait_until(
                alerting.service.store.pending_deliveries, lambda n: n == 0, 30, "empty outbox"
            )
            alerting_green = await wait_until(
                lambda: health(alerting.url), lambda a: a[0] == 200, 60, "alerting green"
            )
    finally:
        for started in workers:
            started.stop()
        broker.terminate()
        await webhook.stop()

    assert red[0] == 503
    assert exit_code == 70, workers[0].stderr()[-3000:]
    assert "worker gives up: broker-data red for" in workers[0].stderr()
    assert alerting_green[1]["status"] == "ok"
    # The alerting service went on through the restart: every sentinel of
    # both halves paged once, none twice.
    firing = [
        p
        for p in webhook.received
        if p["transition"] == "firing" and p["alert"]["labels"]["alertname"] == SENTINEL_ALERT_NAME
    ]
    expected = _sentinels(first) + _sentinels(rest) + _withdrawn(webhook)
    assert len(firing) == len(_pages(webhook)) == expected


def _exit_code(worker: WorkerProcess) -> Any:
    async def code() -> int | None:
        assert worker.process is not None
        return worker.process.poll()

    return code
