"""Test helpers that talk to real processes: produce, consume, scrape, wait."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

# The tests start and stop their own clients the way the services do.
from spinewatch.adapters.kafka_clients import started
from spinewatch.adapters.message_signing import Keyring, TopicKind

if TYPE_CHECKING:
    from spinewatch.engine.bootstrap import RunningWorker
    from spinewatch.engine.settings import Settings

T = TypeVar("T")

SLOWDOWN_VARIABLE = "SPINEWATCH_TEST_SLOWDOWN"

# The internal topics' signing key of every test deployment (workers and
# alerting alike), as SPINEWATCH_SIGNING_KEY would hold it in production.
TEST_SIGNING_KEY = "test-signing-key-of-the-spinewatch-suite-0123456789"


def slowdown() -> float:
    """How much slower than a quiet machine this one is (>= 1; default 1)."""
    text = os.environ.get(SLOWDOWN_VARIABLE, "").strip()
    if not text:
        return 1.0
    try:
        factor = float(text)
    except ValueError:
        raise ValueError(f"{SLOWDOWN_VARIABLE} must be a number >= 1") from None
    if not math.isfinite(factor) or factor < 1:
        raise ValueError(f"{SLOWDOWN_VARIABLE} must be a number >= 1")
    return factor


def scaled(seconds: float) -> float:
    """A deadline of the tests, stretched for a loaded machine.

    Every literal time limit in the tests and their helpers goes through
    here, so one variable buys a busy CI machine more time without editing
    any test. Only limits: what a test asserts never depends on it.
    """
    return seconds * slowdown()


Sample = tuple[str, frozenset[tuple[str, str]]]


async def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes],
    key: bytes | None = None,
    max_request_size: int = 1 << 20,
) -> int:
    sent = 0
    client = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_request_size=max_request_size
    )
    async with started(client) as producer:
        futures = []
        for value in values:
            futures.append(await producer.send(topic, value, key=key))
            sent += 1
        await asyncio.gather(*futures)
    return sent


async def produce_keyed(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes, bytes]],
    partition: int | None = None,
) -> None:
    async with started(AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)) as producer:
        futures = [
            await producer.send(topic, value, key=key, partition=partition)
            for key, value in messages
        ]
        await asyncio.gather(*futures)


async def produce_drift(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes, bytes]],
    keyring: Keyring | None = None,
) -> None:
    """Drift messages (key, value) signed as a worker signs them (the suite's key by default)."""
    signer = keyring or Keyring(TEST_SIGNING_KEY.encode())
    async with started(AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)) as producer:
        futures = [
            await producer.send(
                topic, value, key=key, headers=[signer.sign(TopicKind.DRIFT, key, value)]
            )
            for key, value in messages
        ]
        await asyncio.gather(*futures)


async def consume(
    bootstrap: str, topic: str, count: int, timeout_s: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read `count` records from the start of every partition of `topic`
    (fewer if `timeout_s`, scaled, runs out first)."""
    unstarted = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    async with started(unstarted) as consumer:
        partitions = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + scaled(timeout_s)
        while not partitions and time.monotonic() < deadline:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
        return records


def scrape(url: str) -> dict[Sample, float]:
    """Every sample of a /metrics page, keyed by name and label set."""
    with urllib.request.urlopen(url, timeout=scaled(10)) as response:  # noqa: S310 - loopback http
        text = response.read().decode()
    samples: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


async def scrape_async(url: str) -> dict[Sample, float]:
    return await asyncio.to_thread(scrape, url)


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    timeout_s: float,
    what: str,
) -> T:
    """Poll `probe` until `done(result)`; fail with the last result at the
    deadline (`timeout_s`, scaled)."""
    limit_s = scaled(timeout_s)
    deadline = time.monotonic() + limit_s
    started = time.monotonic()
    result = await probe()
    while not done(result):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {limit_s:g} s waiting for {what}: {result!r}"[:2000]
            )
        # Wait at least as long as the probe took: a /metrics scrape costs the
        # worker and the parser real CPU, and polling it back to back on two
        # cores slowed the very processing it waits for.
        await asyncio.sleep(max(0.1, time.monotonic() - started))
        started = time.monotonic()
        result = await probe()
    return result


def worker_settings(bootstrap: str, app_id: str, **overrides: Any) -> Settings:
    """A worker of a test deployment of its own (topics, group) on the session broker."""
    # Imported here: unit tests need this module, not the engine's settings.
    from spinewatch.devservers.tansu import free_port  # noqa: PLC0415
    from spinewatch.engine.settings import Settings  # noqa: PLC0415

    values: dict[str, Any] = {
        "kafka_brokers": bootstrap,
        "app_id": app_id,
        "partitions": 4,
        "metrics_port": free_port(),
        "web_port": free_port(),
        "session_timeout_s": scaled(3.0),
        "stop_timeout_s": scaled(15.0),
        "ingest_batch_within_s": 0.02,
        # The session broker is Tansu, but reached through explicit
        # kafka_brokers, so the default (on only with embedded_broker)
        # would leave the work-arounds off: workers would linger in the
        # group after stopping and recovery could skip changelog records
        # (patches/tansu.py, points 1 and 2).
        "tansu_compat": True,
        "signing_key": TEST_SIGNING_KEY,
    }
    return Settings(**(values | overrides))


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, brokers: str, startup_timeout_s: float = 60.0
) -> AsyncIterator[RunningWorker]:
    """`spinewatch.engine.bootstrap.running_worker` with a scaled start-up deadline."""
    # Imported here: unit tests need this module, not faust.
    from spinewatch.engine import bootstrap  # noqa: PLC0415

    async with bootstrap.running_worker(settings, brokers, scaled(startup_timeout_s)) as worker:
        yield worker


def outcome_samples(samples: dict[Sample, float]) -> dict[Sample, float]:
    """The cohort metrics only (not process counters, which differ by history)."""
    return {key: value for key, value in samples.items() if key[0].startswith(OUTCOME_PREFIXES)}


# Drift charts included: they too must come out exactly equal after a restart.
OUTCOME_PREFIXES = (
    "spinewatch_outcome_",
    "spinewatch_vas_",
    "spinewatch_baseline_",
    "spinewatch_drift_",
)


def rendered_all_applied(samples: dict[Sample, float]) -> bool:
    """The page's cohort, drift and follow-up metrics cover every event the worker applied
    (they are rendered off the scrape: engine/metric_renderer.py)."""
    rendered = samples.get(("spinewatch_metrics_render_events_applied", frozenset()))
    return rendered == sum_by(samples, "spinewatch_events_applied_total")


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def sum_by(samples: dict[Sample, float], name: str, **match: str) -> float:
    """Sum a metric over every series whose labels include `match`."""
    wanted = set(match.items())
    return sum(v for (n, labels), v in samples.items() if n == name and wanted <= labels)


Json = dict[str, Any]
