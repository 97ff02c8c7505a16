"""End-to-end: the alerting service rides out a Redis outage and pages every signal once.

Measured before: after a 16 s Redis outage /healthz said 200 again, but
signals sent during and after the outage were never paged until a manual
restart, and the log grew 7,566 traceback lines.

Here Redis (with its append-only file, as a deployment runs it) is down for
20 s while signals keep arriving. Every signal (before, during and after)
must reach the webhook exactly once per transition id, /readyz must say
"redis" while it is down, the consumer's restarts must be counted, and the
log must hold no traceback.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from spinewatch.alerting.process import running_alerting
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.contracts.topics import Topology
from spinewatch.devservers.redis import EmbeddedRedis
from tests.conftest import SettingsFactory
from tests.probes import failing, health
from tests.support import TEST_SIGNING_KEY, produce_drift, scrape_async, value, wait_until
from tests.test_alerting import Webhook, _signal

pytestmark = pytest.mark.e2e

OUTAGE_S = 20.0


def _signals(first: int, count: int) -> list[tuple[bytes, bytes]]:
    """Signals of `count` distinct sites: each one a new alert, paged once."""
    messages = []
    for n in range(first, first + count):
        signal = _signal(uuid.UUID(int=n + 1)).model_copy(update={"site_id": f"site-{n:03d}"})
        messages.append((signal.site_id.encode(), signal.model_dump_json().encode()))
    return messages


async def test_a_20_s_redis_outage_pages_every_signal_exactly_once(
    make_settings: SettingsFactory,
    kafka_bootstrap: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app_id = make_settings().app_id
    drift_topic = Topology(app_id).drift
    redis = EmbeddedRedis(tmp_path, persistent=True)
    redis.start()
    webhook = Webhook()
    await webhook.start()
    settings = AlertingSettings(
        kafka_brokers=kafka_bootstrap, app_id=app_id, redis_url=redis.url, key_prefix=app_id,
        webhook_urls=(webhook.url,), audit_topic=False, http_port=0, poll_interval_s=0.1,
        redis_timeout_s=1.0, lease_s=2.0, retry_base_s=0.1, retry_max_s=1.0,
        probe_interval_s=0.5, give_up_after_s=300, signing_key=TEST_SIGNING_KEY,
    )  # fmt: skip

    def paged() -> set[str]:
        return {page["id"] for page in webhook.received}

    async def paged_count() -> int:
        return len(paged())

    try:
        with caplog.at_level(logging.INFO):
            async with running_alerting(settings) as running:
                base = running.url
                await produce_drift(kafka_bootstrap, drift_topic, _signals(0, 10))
                await wait_until(paged_count, lambda n: n >= 10, 60, "10 pages before")
                redis.stop()  # down: the append-only file keeps what it held
                down_at = time.monotonic()
                await produce_drift(kafka_bootstrap, drift_topic, _signals(10, 10))
                red = await wait_until(
                    lambda: health(base),
                    lambda a: any(line.startswith("redis: ") for line in failing(a)),
                    30,
                    "the redis check red while Redis is down",
                )
                await wait_until(
                    _returns(lambda: time.monotonic() - down_at),
                    lambda waited: waited >= OUTAGE_S, OUTAGE_S + 10, "the outage",
                )  # fmt: skip
                redis.start()  # same port, same directory: back with its data
                await produce_drift(kafka_bootstrap, drift_topic, _signals(20, 10))
                await wait_until(paged_count, lambda n: n >= 30, 90, "every signal paged")
                await wait_until(
                    running.service.store.pending_deliveries, lambda n: n == 0, 30, "empty outbox"
                )
                green = await wait_until(lambda: health(base), lambda a: a[0] == 200, 30, "green")
                samples = await scrape_async(f"{base}/metrics")
    finally:
        await webhook.stop()
        redis.stop()

    assert red[0] == 503
    assert any(line.startswith("redis: unreachable") for line in failing(red)), failing(red)
    # Exactly once per transition: 30 firing alerts, 30 distinct ids, no extra page
    # (a page re-sent after a lost completion would repeat its id).
    firing = [p for p in webhook.received if p["transition"] == "firing"]
    assert len(paged()) == 30
    assert len({p["alert"]["fingerprint"] for p in firing}) == 30
    assert len(webhook.received) - len(paged()) <= 2, "more repeats than lost completions"
    restarts = value(samples, "spinewatch_loop_restarts_total", service="alerting", loop="consume")
    assert restarts >= 1
    assert green[1]["status"] == "ok"
    supervisor_lines = [r for r in caplog.records if r.name == "spinewatch.runtime.supervisor"]
    assert supervisor_lines, "the failures were not logged"
    assert all(r.exc_info is None for r in caplog.records), "a traceback reached the log"
    assert len(supervisor_lines) < 4 * OUTAGE_S, "more than a line per failure"


def _returns(measure: Callable[[], float]) -> Callable[[], Awaitable[float]]:
    async def probe() -> float:
        return measure()

    return probe
