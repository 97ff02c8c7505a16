"""End-to-end with worker processes: SIGKILL mid-stream, and scale-out.

Exactness is a property of the design (per-procedure fact sets keyed by
event id, totals rebuilt from the changelog segments on every assignment),
so the tests demand equality with a clean single pass, not closeness.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from spinewatch.demo.synthetic.cohort import default_sites, generate_cohort
from tests.conftest import SettingsFactory
from tests.expectation import Expected, expected_counts, observed_counts
from tests.support import (
    Sample,
    outcome_samples,
    produce,
    rendered_all_applied,
    running_worker,
    scrape_async,
    sum_by,
    wait_until,
)
from tests.topic_audit import audit
from tests.workers import WorkerProcess

pytestmark = pytest.mark.e2e

COUNT_METRICS = (
    "spinewatch_outcome_numerator",
    "spinewatch_outcome_denominator",
    "spinewatch_vas_patients",
)


async def _clean_pass(
    make_settings: SettingsFactory,
    bootstrap: str,
    deliveries: tuple[bytes, ...],
    expected: Expected,
    events: int,
) -> dict[Sample, float]:
    settings = make_settings(app_id=f"{make_settings().app_id}-clean")
    async with running_worker(settings, bootstrap) as worker:
        await produce(bootstrap, settings.events_topic, deliveries)

        async def probe() -> Expected:
            return observed_counts(await scrape_async(f"{worker.metrics.url}/metrics"), expected)

        await wait_until(probe, lambda o: o == expected, 90, "clean pass")

        # The counts above do not cover every event (post-procedure VAS, for
        # one, feeds only a drift chart): the reference is taken once every
        # distinct event is applied, or a restart could never equal it.
        async def applied() -> float:
            samples = await scrape_async(f"{worker.metrics.url}/metrics")
            return sum_by(samples, "spinewatch_events_applied_total")

        await wait_until(applied, lambda n: n >= events, 90, "every event applied")

        # And every site's own chart design in place (calibrated in the background).
        async def designed() -> dict[Sample, float]:
            return await scrape_async(f"{worker.metrics.url}/metrics")

        samples = await wait_until(
            designed,
            lambda s: (
                s.get(("spinewatch_drift_design_pending", frozenset())) == 0
                and rendered_all_applied(s)
            ),
            120,
            "every site designed, on a page rendered after every event",
        )
        return outcome_samples(samples)


def _summed_counts(scrapes: list[dict[Sample, float]]) -> dict[Sample, float]:
    summed: dict[Sample, float] = {}
    for samples in scrapes:
        for key, value in samples.items():
            if key[0] in COUNT_METRICS:
                summed[key] = summed.get(key, 0.0) + value
    return summed


_STREAM_COUNTERS = (
    "spinewatch_messages_received_total",
    "spinewatch_events_accepted_total",
    "spinewatch_events_applied_total",
    "spinewatch_events_duplicate_total",
    "spinewatch_state_rebuilds_total",
    "spinewatch_procedures_held",
)


# Two full passes over 3000 procedures with worker processes: ~35 s here,
# and more than the suite's 120 s default on a loaded CI machine.
@pytest.mark.timeout(300)
async def test_sigkill_mid_stream_then_restart_equals_a_clean_pass(
    make_settings: SettingsFactory, kafka_bootstrap: str
) -> None:
    cohort = generate_cohort(21, default_sites(3000))
    expected = expected_counts(cohort.events)
    clean = await _clean_pass(
        make_settings, kafka_bootstrap, cohort.deliveries, expected, len(cohort.events)
    )

    settings = make_settings()
    first = WorkerProcess(settings)
    first.start()
    try:
        await first.wait_for_partitions()
        await produce(kafka_bootstrap, settings.events_topic, cohort.deliveries)
        total = len(cohort.events)

        async def applied() -> float:
            return sum_by(
                await scrape_async(f"{first.url}/metrics"), "spinewatch_events_applied_total"
            )

        # Kill as soon as part of the stream is applied (and part is not).
        seen = await wait_until(applied, lambda n: n > 0, 60, "the first events applied")
        first.kill()
        assert seen < total, "the worker finished before it could be killed mid-stream"
    finally:
        first.stop()

    second = WorkerProcess(settings)
    second.start()
    try:
        await second.wait_for_partitions()

        async def differences() -> dict[Sample, tuple[float | None, float | None]]:
            # The differing samples only, so a timeout names what did not match.
            restarted = outcome_samples(await scrape_async(f"{second.url}/metrics"))
            return {
                key: (clean.get(key), restarted.get(key))
                for key in clean.keys() | restarted.keys()
                if clean.get(key) != restarted.get(key)
            }

        try:
            diff = await wait_until(
                differences, lambda d: not d, 90, "restart to equal the clean pass"
            )
        except AssertionError:
            # Seen now and then under heavy CPU load until faust's hand-over
            # after recovery was fixed (patches/faust_recovery.py): the
            # restarted worker ended a few events short, logging nothing.
            # Its stream counters and the topic audit say which hop lost what.
            text = await scrape_async(f"{second.url}/metrics")
            print(f"events {total}; {seen} applied before the kill")
            for name in _STREAM_COUNTERS:
                print(f"restarted worker: {name} = {sum_by(text, name)}")
            ids = (uuid.UUID(event["event_id"]).bytes for event in cohort.events)
            print(await audit(kafka_bootstrap, settings, ids))
            raise
        assert diff == {}
        restarted = outcome_samples(await scrape_async(f"{second.url}/metrics"))
        assert restarted == clean
        assert observed_counts(restarted, expected) == expected
    finally:
        second.stop()


async def test_two_workers_in_one_group_report_what_one_worker_does(
    make_settings: SettingsFactory, kafka_bootstrap: str
) -> None:
    cohort = generate_cohort(22, default_sites(1200))
    expected = expected_counts(cohort.events)
    clean = await _clean_pass(
        make_settings, kafka_bootstrap, cohort.deliveries, expected, len(cohort.events)
    )

    settings = make_settings()
    workers = [WorkerProcess(settings), WorkerProcess(settings)]
    for worker in workers:
        worker.start()
    try:

        async def assignments() -> list[set[int] | None]:
            healths = await asyncio.gather(*(asyncio.to_thread(w.health) for w in workers))
            return [set(h["active_partitions"]) if h else None for h in healths]

        def split(parts: list[set[int] | None]) -> bool:
            return all(parts) and set.union(*parts) == {0, 1, 2, 3} and not set.intersection(*parts)  # type: ignore[arg-type]

        await wait_until(assignments, split, 90, "both workers to own partitions")
        await produce(kafka_bootstrap, settings.events_topic, cohort.deliveries)

        async def summed() -> dict[Sample, float]:
            scrapes = await asyncio.gather(*(scrape_async(f"{w.url}/metrics") for w in workers))
            return _summed_counts(list(scrapes))

        want = _summed_counts([clean])
        together = await wait_until(summed, lambda s: s == want, 90, "two workers to equal one")
        assert together == want
        # Each site lives in one partition, so it is reported by one worker only.
        per_worker = await asyncio.gather(*(scrape_async(f"{w.url}/metrics") for w in workers))
        sites = [
            {
                dict(labels)["site"]
                for (name, labels) in samples
                if name == "spinewatch_outcome_denominator"
            }
            - {"all"}
            for samples in per_worker
        ]
        assert not sites[0] & sites[1]
    finally:
        for worker in workers:
            worker.stop()
