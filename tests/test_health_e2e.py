"""End-to-end: the worker's health tells the truth, and its loops are supervised.

A worker whose ingest agent is stuck while events wait must turn /readyz
(and /healthz) red within 10 s, with the reason, and green again once it
recovers; every event must still be counted. A killed loop, and a loop
that raises, must be restarted and counted in
spinewatch_loop_restarts_total.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from spinewatch.adapters.kafka_admin import ensure_topics
from spinewatch.contracts import Indication, ProcedureType
from spinewatch.demo.synthetic.cohort import SiteProfile, encode, generate_cohort
from spinewatch.engine import bootstrap, stream_steps
from spinewatch.engine.bootstrap import running_worker
from spinewatch.engine.drift_monitor import DriftMonitor
from spinewatch.engine.stream_steps import IngestStep
from tests.conftest import SettingsFactory
from tests.probes import failing, health
from tests.support import produce, produce_keyed, scrape_async, sum_by, value, wait_until

pytestmark = pytest.mark.e2e


def _events(procedures: int = 20) -> list[bytes]:
    site = SiteProfile("health-site", procedures, {(ProcedureType.PVP, Indication.OSTEOPOROTIC): 1})
    cohort = generate_cohort(41, [site], duplicate_share=0, malformed=0, retractions=0)
    return [encode(e) for e in cohort.events]


async def test_readyz_turns_red_within_10_s_when_ingest_is_stuck_and_green_when_it_recovers(
    make_settings: SettingsFactory, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = asyncio.Event()
    release = asyncio.Event()
    step = IngestStep.__call__

    async def maybe_stuck(self: IngestStep, batch: Sequence[Any]) -> None:
        if stuck.is_set():
            await release.wait()  # the agent hangs mid-batch, as on a hung call
        await step(self, batch)

    monkeypatch.setattr(IngestStep, "__call__", maybe_stuck)
    settings = make_settings(stall_after_s=3.0, probe_interval_s=0.5)
    events = _events()
    async with running_worker(settings, kafka_bootstrap) as worker:
        base = worker.metrics.url
        await wait_until(lambda: health(base), lambda a: a[0] == 200, 30, "a ready worker")
        stuck.set()
        await produce(kafka_bootstrap, settings.events_topic, events)
        sent_at = time.monotonic()
        red = await wait_until(lambda: health(base), lambda a: a[0] == 503, 30, "red /readyz")
        took = time.monotonic() - sent_at
        live = await health(base, "healthz")
        reasons = failing(red)
        release.set()
        samples = await wait_until(
            lambda: scrape_async(f"{base}/metrics"),
            lambda s: sum_by(s, "spinewatch_events_accepted_total") >= len(events),
            60,
            "every event counted after the agent recovered",
        )
        green = await wait_until(lambda: health(base), lambda a: a[0] == 200, 30, "green again")
        after = await scrape_async(f"{base}/metrics")

    assert took < 10, f"/readyz turned red {took:.1f} s after the events were sent"
    assert any(r.startswith("stream: ") and "none processed for" in r for r in reasons), reasons
    assert live[0] == 503, "a stuck agent is a liveness failure too"
    assert sum_by(samples, "spinewatch_events_accepted_total") == len(events)
    assert value(after, "spinewatch_health_check_ok", service="worker", check="stream") == 1
    assert green[1]["status"] == "ok"


async def test_a_killed_loop_and_a_raising_loop_are_restarted_and_counted(
    make_settings: SettingsFactory, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish = stream_steps.publish_outbox
    failures_left = [2]

    async def flaky_publish(monitor: DriftMonitor, topic: Any, **topics: Any) -> int:
        if failures_left[0] > 0:
            failures_left[0] -= 1
            raise RuntimeError("injected")
        return await publish(monitor, topic, **topics)

    monkeypatch.setattr(bootstrap, "publish_outbox", flaky_publish)
    settings = make_settings(drift_interval_s=0.2, probe_interval_s=0.5)
    events = _events()
    async with running_worker(settings, kafka_bootstrap) as worker:
        base = worker.metrics.url
        metrics = f"{base}/metrics"

        def restarts(samples: Any, loop: str) -> float:
            return value(samples, "spinewatch_loop_restarts_total", service="worker", loop=loop)

        drift = await wait_until(
            lambda: scrape_async(metrics), lambda s: restarts(s, "drift") >= 2, 30, "drift restarts"
        )
        assert worker.supervisor.kill("lag-probe")
        killed = await wait_until(
            lambda: scrape_async(metrics),
            lambda s: restarts(s, "lag-probe") >= 1,
            30,
            "the killed probe restarted",
        )
        await produce(kafka_bootstrap, settings.events_topic, events)
        samples = await wait_until(
            lambda: scrape_async(metrics),
            lambda s: sum_by(s, "spinewatch_events_accepted_total") >= len(events),
            60,
            "every event counted",
        )
        green = await wait_until(lambda: health(base), lambda a: a[0] == 200, 30, "green")

    assert restarts(drift, "drift") == 2
    assert restarts(killed, "lag-probe") == 1
    assert restarts(samples, "ingest") == 0
    assert sum_by(samples, "spinewatch_events_accepted_total") == len(events)
    assert green[1]["status"] == "ok"


async def test_a_bad_changelog_segment_is_skipped_loudly_not_fatal_to_every_recovery(
    make_settings: SettingsFactory, kafka_bootstrap: str
) -> None:
    # Measured before: one unreadable segment made every recovery fail.
    settings = make_settings()
    await ensure_topics(kafka_bootstrap, settings.topics.names(), settings.partitions)
    for partition in range(settings.partitions):
        await produce_keyed(
            kafka_bootstrap,
            settings.changelog_topic,
            [(f"{partition:05d}/{999:016d}".encode(), b"not a fact batch")],
            partition=partition,
        )
    events = _events()
    async with running_worker(settings, kafka_bootstrap) as worker:
        base = worker.metrics.url
        await produce(kafka_bootstrap, settings.events_topic, events)
        samples = await wait_until(
            lambda: scrape_async(f"{base}/metrics"),
            lambda s: sum_by(s, "spinewatch_events_applied_total") >= len(events),
            60,
            "every event applied",
        )
        answer = await health(base)
        live = await health(base, "healthz")

    assert sum_by(samples, "spinewatch_changelog_segments_unreadable_total") == settings.partitions
    assert answer[0] == 503
    (changelog,) = [line for line in failing(answer) if line.startswith("changelog: ")]
    assert f"{settings.partitions} changelog segments could not be read" in changelog
    assert live[0] == 200  # a restart would not bring them back: readiness only
