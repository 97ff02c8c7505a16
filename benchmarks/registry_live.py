"""The registry benchmark's live phase: a steady event rate, timed to /metrics and Alertmanager.

With the registry's state held, events are produced one per message at a
fixed rate (default 50/s) on an absolute schedule. Two things are timed
from the moment each event is handed to the producer:

- visible on /metrics: `/metrics` is scraped back to back (with a short
  pause); when the events applied that the page's cohort metrics cover
  (`spinewatch_metrics_render_events_applied`: they are rendered off the
  scrape, engine/metric_renderer.py; `spinewatch_events_applied_total` on
  an older worker) have grown by k since the phase began, the first k
  events produced are taken as visible at the end of that scrape.
  Count-based, so no id appears anywhere; across partitions the k applied
  are not necessarily the first k sent, which at 50 events/s and
  sub-second latencies moves a figure by at most a few tens of
  milliseconds.
- paged in Alertmanager: every `sentinel_every_s` a new procedure is
  produced, and a second later its procedure-related pulmonary cement
  embolism; its alert is recognised in Alertmanager's API by its alertname
  and `sentinel_id` label (a hash, computed here as the worker does). The
  sentinel's drift message is also read from the drift topic (its
  CreateTime, set by the worker's producer), which splits the time into
  the worker's part (event -> drift topic) and the alerting service's and
  Alertmanager's part (drift topic -> the API).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from pipeline import BenchmarkFailure, scrape
from registry_workload import LiveEvents

from spinewatch.domain.alerts.model import SENTINEL_ALERT_NAME

POLL_S = 0.02  # pause between polls of /metrics and of Alertmanager
SETTLE_S = 120.0  # after the last event: all visible and paged within this, or the run fails


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


@dataclass
class LiveResult:
    rate: float
    seconds: float
    events: int
    sentinels: int
    metric_visible: dict[str, float] = field(default_factory=dict)
    alert_in_alertmanager: dict[str, float] = field(default_factory=dict)
    sentinel_on_drift_topic: dict[str, float] = field(default_factory=dict)
    drift_topic_to_alertmanager: dict[str, float] = field(default_factory=dict)
    scrape_during: dict[str, float] = field(default_factory=dict)


def _covered(samples: dict[str, float]) -> float:
    """Events applied that the page's cohort metrics include (rendered off the scrape)."""
    rendered = samples.get("spinewatch_metrics_render_events_applied")
    return rendered if rendered is not None else samples.get("spinewatch_events_applied_total", 0.0)


async def skip_alerting_backlog(bootstrap: str, drift_topic: str, group: str) -> int:
    """Commit the drift topic's end offsets for the alerting group, once they are still.

    The bulk load's own sentinels (thousands at registry scale, announced
    again at every restart) would otherwise be paged first and delay the
    timed ones; the live phase measures steady state, so the alerting
    service starts where the topic ends, as `kafka-consumer-groups
    --reset-offsets --to-latest` would make it.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()  # a metadata refresh
        numbers = sorted(consumer.partitions_for_topic(drift_topic) or ())
        if not numbers:
            raise BenchmarkFailure(f"topic {drift_topic} has no partitions")
        partitions = [TopicPartition(drift_topic, p) for p in numbers]
        consumer.assign(partitions)
        ends: dict[TopicPartition, int] = {}
        still_since = time.monotonic()
        deadline = still_since + 60
        while time.monotonic() < deadline:
            now = await consumer.end_offsets(partitions)
            if now != ends:
                ends, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= 3:
                break
            await asyncio.sleep(0.5)
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in ends.items()})
        return sum(ends.values())
    finally:
        await consumer.stop()


async def live_phase(  # noqa: PLR0915 - one phase, its watchers as closures
    *,
    bootstrap: str,
    events_topic: str,
    drift_topic: str,
    worker_url: str,
    alertmanager_url: str | None,
    live: LiveEvents,
    rate: float,
    seconds: float,
    sentinel_every_s: float,
    log: Callable[[str], None],
) -> LiveResult:
    total = int(rate * seconds)
    sent: list[float] = []
    visible: list[float] = []
    scrapes: list[float] = []
    sentinel_sent: dict[str, float] = {}  # sentinel id -> its embolism produced
    on_topic: dict[str, float] = {}
    in_alertmanager: dict[str, float] = {}
    done = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        base = _covered(await scrape(session, f"{worker_url}/metrics"))

        async def watch_metrics() -> None:
            while True:
                began = time.perf_counter()
                samples = await scrape(session, f"{worker_url}/metrics")
                now = time.perf_counter()
                scrapes.append(now - began)
                applied = int(_covered(samples) - base)
                if applied > len(sent):
                    raise BenchmarkFailure(f"live: {applied} events applied, {len(sent)} sent")
                visible.extend(now - sent[k] for k in range(len(visible), applied))
                if done.is_set() and len(visible) == total:
                    return
                await asyncio.sleep(POLL_S)

        async def watch_alertmanager() -> None:
            assert alertmanager_url is not None  # noqa: S101 - only started with one
            query = [("filter", f'alertname="{SENTINEL_ALERT_NAME}"'), ("active", "true")]
            while True:
                async with session.get(f"{alertmanager_url}/api/v2/alerts", params=query) as r:
                    alerts: list[dict[str, Any]] = await r.json()
                now = time.perf_counter()
                for alert in alerts:
                    wanted = alert["labels"].get("sentinel_id", "")
                    if wanted in sentinel_sent and wanted not in in_alertmanager:
                        in_alertmanager[wanted] = now
                if done.is_set() and len(in_alertmanager) == len(sentinel_sent):
                    return
                await asyncio.sleep(POLL_S)

        # The drift message's own timestamp (CreateTime: when the worker's
        # producer took it), on this process's perf_counter scale; reading
        # it here adds this consumer's polling to no figure.
        wall_minus_perf = time.time() - time.perf_counter()

        async def watch_drift_topic(consumer: AIOKafkaConsumer) -> None:
            while True:
                batches = await consumer.getmany(timeout_ms=50)
                for records in batches.values():
                    for record in records:
                        value = record.value or b""
                        if b"drift.sentinel" not in value:
                            continue
                        for wanted in sentinel_sent.keys() - on_topic.keys():
                            if wanted.encode() in value:
                                on_topic[wanted] = record.timestamp / 1000 - wall_minus_perf

        drift = AIOKafkaConsumer(
            drift_topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest"
        )
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
        await drift.start()
        await producer.start()
        watchers = [asyncio.ensure_future(watch_metrics())]
        if alertmanager_url is not None:
            watchers.append(asyncio.ensure_future(watch_alertmanager()))
        topic_watch = asyncio.ensure_future(watch_drift_topic(drift))
        try:
            await _produce_steadily(
                producer,
                events_topic,
                live,
                total=total,
                rate=rate,
                sentinel_every_s=sentinel_every_s,
                sent=sent,
                sentinel_sent=sentinel_sent,
            )
            done.set()
            log(f"   live: {total} events sent; waiting for the last to be visible and paged")
            finished, _ = await asyncio.wait(watchers, timeout=SETTLE_S)
            for task in finished:
                task.result()
            if len(finished) < len(watchers):
                paged = f"{len(in_alertmanager)}/{len(sentinel_sent)} sentinels paged"
                # What was seen so far, to say how far behind the worker was.
                so_far = {
                    "visible": percentiles(visible),
                    "paged": percentiles(
                        [in_alertmanager[s] - sentinel_sent[s] for s in in_alertmanager]
                    ),
                    "scrapes": percentiles(scrapes),
                }
                raise BenchmarkFailure(
                    f"live: after {SETTLE_S:.0f} s, {len(visible)}/{total} events visible, "
                    + (paged if alertmanager_url else "")
                    + f"; latencies of those seen: {so_far}"
                )
        finally:
            for task in [*watchers, topic_watch]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await producer.stop()
            await drift.stop()
    result = LiveResult(rate, seconds, total, len(sentinel_sent))
    result.metric_visible = percentiles(visible)
    result.scrape_during = percentiles(scrapes)
    if alertmanager_url is not None:
        result.alert_in_alertmanager = percentiles(
            [in_alertmanager[s] - sentinel_sent[s] for s in sentinel_sent]
        )
        seen = [s for s in sentinel_sent if s in on_topic]
        result.sentinel_on_drift_topic = percentiles([on_topic[s] - sentinel_sent[s] for s in seen])
        result.drift_topic_to_alertmanager = percentiles(
            [in_alertmanager[s] - on_topic[s] for s in seen]
        )
    return result


async def _produce_steadily(
    producer: AIOKafkaProducer,
    topic: str,
    live: LiveEvents,
    *,
    total: int,
    rate: float,
    sentinel_every_s: float,
    sent: list[float],
    sentinel_sent: dict[str, float],
) -> None:
    """`total` events at `rate` per second on an absolute schedule; sentinels among them."""
    every = max(1, round(sentinel_every_s * rate)) if sentinel_every_s > 0 else 0
    lag = max(1, round(rate))  # the embolism one second after its procedure
    planned: dict[int, tuple[str, tuple[bytes, bytes]]] = {}
    number = 0
    start = time.perf_counter()
    for k in range(total):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        alert: str | None = None
        if k in planned:
            alert, message = planned.pop(k)
        elif every and k % every == 0 and k + lag < total - rate:
            alert_id, procedure, embolism = live.sentinel(number)
            number += 1
            planned[k + lag] = (alert_id, embolism)
            message = procedure
        else:
            message = live.next()
        sent.append(time.perf_counter())
        if alert is not None:
            sentinel_sent[alert] = sent[-1]
        await producer.send(topic, value=message[1], key=message[0])
    if planned:
        raise BenchmarkFailure("live: a sentinel's embolism was planned past the end")
