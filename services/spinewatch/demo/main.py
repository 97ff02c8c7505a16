"""`spinewatch demo`: the whole engine on a bundled synthetic cohort.

With nothing configured it starts the embedded Kafka-protocol broker and
one worker, streams a seeded synthetic cohort (several sites, calibrated on
the catalog baselines, with follow-ups, redelivered duplicates, a follow-up
that arrives before its procedure, a late follow-up, retractions and one
malformed message) through the real pipeline, serves /metrics while it
runs, then prints the drift charts:
one site's leakage odds double a third of the way through its year, and
the demo prints the signal the worker published for it, with the
estimated change point, and whether the stable sites stayed in control;
then what on-call staff receive from the alerting service (a throwaway
redis-server holds its state), a line per transition; and last the
governance report, written from the topics into `report_dir` (kept after
the demo), with the legend of its flags and its path.
It stops everything it started.
"""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TextIO

from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from spinewatch.adapters.kafka_security import KafkaSecurity
from spinewatch.adapters.message_signing import new_secret
from spinewatch.demo.alerting import print_alerts
from spinewatch.demo.drift import DRIFTING_SITE, drift_start, print_drift, with_drifting_site
from spinewatch.demo.report import DEFAULT_REPORT_DIR, write_demo_report
from spinewatch.demo.synthetic.cohort import SyntheticCohort, default_sites, generate_cohort
from spinewatch.engine.bootstrap import RunningWorker, kafka_brokers, running_worker
from spinewatch.engine.settings import Settings

DEMO_SEED = 2026
DEMO_PROCEDURES = 3000
TIMEOUT_S = 90.0


def run_demo(out: TextIO | None = None, report_dir: Path = DEFAULT_REPORT_DIR) -> int:
    return asyncio.run(_demo(out or sys.stdout, report_dir))


async def _demo(out: TextIO, report_dir: Path) -> int:
    # A fresh app id per run: against a configured broker, an earlier run's
    # topics and offsets must not mix into this one.
    settings = Settings(app_id=f"spinewatch-demo-{uuid.uuid4().hex[:8]}", metrics_port=0)
    if settings.kafka_brokers is None:
        # The demo is a throwaway run by design, so it asks for the embedded
        # broker explicitly (a worker without brokers refuses to start).
        settings = settings.model_copy(update={"embedded_broker": True})
    if settings.signing_key is None:
        # One key for this run's worker and alerting service (its topics are its own).
        settings = settings.model_copy(update={"signing_key": SecretStr(new_secret())})
    sites = with_drifting_site(default_sites(DEMO_PROCEDURES))
    cohort = generate_cohort(DEMO_SEED, sites)
    began = drift_start(cohort.events, next(s for s in sites if s.site_id == DRIFTING_SITE))
    started = time.monotonic()
    async with kafka_brokers(settings) as brokers:
        where = "embedded Tansu" if settings.kafka_brokers is None else "configured"
        print(f"spinewatch demo: {where} broker at {brokers}", file=out)
        async with running_worker(settings, brokers) as worker:
            print(f"  worker up; Prometheus metrics at {worker.metrics.url}/metrics", file=out)
            await _stream(brokers, settings.kafka_security, settings.events_topic, cohort, out)
            await _wait_until_processed(worker, cohort)
            series = await asyncio.to_thread(_scrape_series_count, worker.metrics.url)
            _print_counts(worker, cohort, series, out)
            await print_drift(worker, brokers, sites, began, out)
            await print_alerts(brokers, settings, out)
            report = await write_demo_report(settings, brokers, report_dir)
    print(f"\ndone in {time.monotonic() - started:.1f} s; broker and worker stopped.", file=out)
    # Last: the report's flagged rows, the legend of its flags, and its path.
    out.write(report)
    return 0


async def _stream(
    brokers: str, security: KafkaSecurity, topic: str, cohort: SyntheticCohort, out: TextIO
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=brokers, linger_ms=5, **security.aiokafka_kwargs()
    )
    await producer.start()
    try:
        sent = [await producer.send(topic, value) for value in cohort.deliveries]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    print(
        f"  streamed {len(cohort.deliveries)} messages: {len(cohort.events)} distinct events, "
        f"{cohort.duplicates} redelivered duplicates, {len(cohort.malformed)} malformed",
        file=out,
    )


async def _wait_until_processed(worker: RunningWorker, cohort: SyntheticCohort) -> None:
    metrics = worker.engine.metrics
    deadline = time.monotonic() + TIMEOUT_S
    while _count(metrics.applied) < len(cohort.events) or _count(metrics.applied) + _count(
        metrics.duplicates
    ) + _dead(worker) < len(cohort.deliveries):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker did not process the cohort within {TIMEOUT_S} s")
        await asyncio.sleep(0.1)


def _count(counter: object) -> int:
    return int(counter._value.get())  # type: ignore[attr-defined]


def _dead(worker: RunningWorker) -> int:
    family = worker.engine.metrics.dead_lettered
    return sum(int(sample.value) for m in family.collect() for sample in m.samples)


def _scrape_series_count(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:  # noqa: S310
        text: str = response.read().decode()
    return sum(1 for line in text.splitlines() if line.startswith("spinewatch_"))


def _print_counts(worker: RunningWorker, cohort: SyntheticCohort, series: int, out: TextIO) -> None:
    metrics = worker.engine.metrics
    print(
        f"  applied {_count(metrics.applied)} events, ignored {_count(metrics.duplicates)} "
        f"duplicates, dead-lettered {_dead(worker)} (with field-level reasons); "
        f"/metrics served {series} series",
        file=out,
    )
