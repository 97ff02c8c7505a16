"""End-to-end: the outcomes engine on a real Kafka-protocol broker.

Each test streams events into the inbound topic of its own deployment (own
topics and group on the session's broker), waits on a condition with a
deadline, and compares what /metrics reports with an expectation computed
independently from the events (tests/expectation.py).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

import pytest

from spinewatch.contracts import Indication, ProcedureType
from spinewatch.demo.synthetic.cohort import SiteProfile, default_sites, encode, generate_cohort
from spinewatch.patches.tansu import FETCH_MAX_WAIT_MS
from tests.conftest import SettingsFactory
from tests.expectation import Expected, expected_counts, observed_counts
from tests.support import (
    consume,
    outcome_samples,
    produce,
    produce_keyed,
    running_worker,
    scrape_async,
    sum_by,
    wait_until,
)

pytestmark = pytest.mark.e2e


def _small_cohort(seed: int, procedures: int = 300) -> Any:
    return generate_cohort(seed, default_sites(procedures))


async def _wait_for_expected(url: str, expected: Expected, timeout_s: float = 60.0) -> None:
    async def probe() -> Expected:
        return observed_counts(await scrape_async(f"{url}/metrics"), expected)

    observed = await wait_until(probe, lambda o: o == expected, timeout_s, "expected counts")
    assert observed == expected


async def test_exact_counts_match_an_independent_expectation(
    make_settings: SettingsFactory, kafka_bootstrap: str
) -> None:
    cohort = _small_cohort(seed=11)
    expected = expected_counts(cohort.events)
    assert (
        sum(
            c[("spinewatch_outcome_denominator", "complication_rate", "")]
            for c in expected.values()
        )
        > 200
    )
    settings = make_settings()
    async with running_worker(settings, kafka_bootstrap) as worker:
        # Tansu work-around 3: the worker's fetches wait briefly, not 1.5 s.
        consumer = worker.app.consumer._thread._ensure_consumer()  # type: ignore[attr-defined]
        assert consumer._fetcher._fetch_max_wait_ms == FETCH_MAX_WAIT_MS
        await produce(kafka_bootstrap, settings.events_topic, cohort.deliveries)
        await _wait_for_expected(worker.metrics.url, expected)
        samples = await scrape_async(f"{worker.metrics.url}/metrics")
    # The all-sites roll-up is the sum of the site cohorts.
    rollup = sum_by(
        samples,
        "spinewatch_outcome_denominator",
        site="all",
        operator="all",
        metric="complication_rate",
    )
    sites = sum(
        c[("spinewatch_outcome_denominator", "complication_rate", "")] for c in expected.values()
    )
    assert rollup == sites
    assert sum_by(samples, "spinewatch_events_duplicate_total") >= cohort.duplicates


async def test_duplicates_and_any_delivery_order_give_the_same_metrics(
    make_settings: SettingsFactory, kafka_bootstrap: str
) -> None:
    cohort = _small_cohort(seed=12, procedures=150)
    expected = expected_counts(cohort.events)
    distinct = [encode(e) for e in cohort.events]
    # Reverse clinical order (every follow-up, complication and retraction
    # before its procedure), with every event delivered twice.
    shuffled = list(reversed(distinct)) + distinct[::3] + distinct
    random.Random(5).shuffle(shuffled[: len(shuffled) // 2])
    settings = make_settings()
    async with running_worker(settings, kafka_bootstrap) as worker:
        await produce(kafka_bootstrap, settings.events_topic, shuffled)
        await _wait_for_expected(worker.metrics.url, expected)
        samples = await scrape_async(f"{worker.metrics.url}/metrics")
    assert sum_by(samples, "spinewatch_events_duplicate_total") == len(shuffled) - len(distinct)
    assert sum_by(samples, "spinewatch_events_applied_total") == len(distinct)


async def test_bulk_messages_count_exactly_like_single_events(
    make_settings: SettingsFactory, kafka_bootstrap: str
) -> None:
    cohort = _small_cohort(seed=13)
    expected = expected_counts(cohort.events)
    by_site: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in cohort.events:
        by_site[event["site_id"]].append(event)
    messages = [
        (site.encode(), json.dumps(events[i : i + 250]).encode())
        for site, events in by_site.items()
        for i in range(0, len(events), 250)
    ]
    settings = make_settings()
    async with running_worker(settings, kafka_bootstrap) as worker:
        await produce_keyed(kafka_bootstrap, settings.events_topic, messages)
        await _wait_for_expected(worker.metrics.url, expected)
        samples = await scrape_async(f"{worker.metrics.url}/metrics")
    assert sum_by(samples, "spinewatch_messages_received_total", path="bulk") == len(messages)


async def test_invalid_messages_are_dead_lettered_and_the_stream_goes_on(
    make_settings: SettingsFactory, kafka_bootstrap: str
) -> None:
    site = SiteProfile(
        "dlq-site", procedures=20, case_mix={(ProcedureType.PVP, Indication.HEMANGIOMA): 1.0}
    )
    cohort = generate_cohort(14, [site], malformed=0)
    valid = [encode(e) for e in cohort.events]
    first = json.loads(valid[0])
    bad_version = json.dumps(
        first | {"schema_version": 2, "event_id": "00000000-0000-4000-8000-000000000001"}
    ).encode()
    bad_field = json.dumps(
        first | {"pre_vas": "seven", "event_id": "00000000-0000-4000-8000-000000000002"}
    ).encode()
    bulk_with_one_bad = json.dumps(
        [json.loads(valid[1]), {"event_type": "procedure.performed"}]
    ).encode()
    poison = [b"{not json", bad_version, b"42", bad_field]
    # Poison first, then the valid stream: nothing after a bad message is lost.
    deliveries = [*poison, bulk_with_one_bad, *valid]
    settings = make_settings()
    async with running_worker(settings, kafka_bootstrap) as worker:
        await produce(kafka_bootstrap, settings.events_topic, deliveries)
        await _wait_for_expected(worker.metrics.url, expected_counts(cohort.events))
        # The poison may sit in another partition than the valid events, and
        # so be triaged after them: wait for the dead letters in their own right.
        samples = await wait_until(
            lambda: scrape_async(f"{worker.metrics.url}/metrics"),
            lambda s: sum_by(s, "spinewatch_events_deadlettered_total") >= 5,
            30.0,
            "five dead letters counted",
        )
        letters = await consume(kafka_bootstrap, settings.deadletter_topic, count=5)

    assert len(letters) == 5
    by_value = {record.value: dict(record.headers) for record in letters}
    for raw in poison:
        assert raw in by_value, raw  # the original bytes, unchanged
    assert by_value[b"{not json"]["spinewatch-reason"] == b"invalid_json"
    assert by_value[bad_version]["spinewatch-reason"] == b"unsupported_schema_version"
    field_errors = json.loads(by_value[bad_field]["spinewatch-errors"])
    assert [e["field"] for e in field_errors] == ["pre_vas"]
    assert b"seven" not in by_value[bad_field]["spinewatch-errors"]  # never echo values
    bulk_letters = [h for h in by_value.values() if "spinewatch-bulk-index" in h]
    assert [h["spinewatch-bulk-index"] for h in bulk_letters] == [b"1"]
    assert sum_by(samples, "spinewatch_events_deadlettered_total") == 5
    assert sum_by(samples, "spinewatch_events_deadlettered_total", reason="schema_violation") == 2
    assert sum_by(samples, "spinewatch_events_deadlettered_total", reason="not_an_event") == 1
    assert outcome_samples(samples)  # and the valid events were all counted (waited above)


async def test_rocksdb_store_counts_exactly_and_after_a_restart_from_disk(
    make_settings: SettingsFactory, kafka_bootstrap: str, tmp_path: Any
) -> None:
    cohort = _small_cohort(seed=15, procedures=120)
    expected = expected_counts(cohort.events)
    settings = make_settings(store="rocksdb://", data_dir=tmp_path)
    async with running_worker(settings, kafka_bootstrap) as worker:
        await produce(kafka_bootstrap, settings.events_topic, cohort.deliveries)
        await _wait_for_expected(worker.metrics.url, expected)
    assert any(tmp_path.rglob("*")), "RocksDB wrote nothing to its data directory"
    # A second worker on the same data directory starts from the segments on
    # disk (and the changelog tail), and reports the same totals. Some events
    # are delivered again: they must not count twice.
    async with running_worker(settings, kafka_bootstrap) as worker:
        await produce(kafka_bootstrap, settings.events_topic, cohort.deliveries[:50])
        await _wait_for_expected(worker.metrics.url, expected)
        assert worker.engine.metrics.duplicates._value.get() >= 50
        # The first worker's clean stop wrote a snapshot of every partition it
        # held, and each one stood for the segments on disk (no full rebuild).
        loads = worker.engine.metrics.snapshots
        assert loads.labels("loaded")._value.get() == settings.partitions
        assert all(
            loads.labels(refused)._value.get() == 0
            for refused in ("missing", "stale", "unreadable", "other_version")
        )
