"""End-to-end: poison input never stops the stream (issue 15, points 1-3).

Each poison message that once stopped ingest for good (measured on the
code before: 0 of the next 200 valid events were counted) is sent first,
then 200 valid events. Every poison message must come out as a dead letter
with its own reason, every valid event must be counted exactly (against
an independent expectation), and the dead-letter counter must equal what
the dead-letter topic really holds.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from spinewatch.contracts import Event, Indication, ProcedureType
from spinewatch.demo.synthetic.cohort import SiteProfile, encode, generate_cohort
from spinewatch.domain.outcomes.facts import fact_of
from spinewatch.engine import ingest
from spinewatch.engine.bootstrap import running_worker
from tests.conftest import SettingsFactory
from tests.expectation import expected_counts, observed_counts
from tests.probes import health
from tests.support import consume, scrape_async, sum_by, wait_until

pytestmark = pytest.mark.e2e

MAX_MESSAGE_BYTES = 1_000_000


def _valid_events() -> list[dict[str, Any]]:
    site = SiteProfile("poison-site", 80, {(ProcedureType.PVP, Indication.HEMANGIOMA): 1.0})
    cohort = generate_cohort(31, [site], duplicate_share=0, malformed=0, retractions=0)
    events = list(cohort.events[:200])
    assert len(events) == 200
    return events


def _poison(template: dict[str, Any], doomed_id: str) -> dict[str, bytes | None]:
    extreme = template | {
        "event_id": "00000000-0000-4000-8000-0000000000e1",
        "occurred_at": "9999-12-31T23:59:59-23:59",
    }
    # Just under the size limit, invalid, and over the dead-letter budget.
    big_invalid = template | {
        "event_id": "00000000-0000-4000-8000-0000000000e2",
        "pre_vas": "x" * 900_000,
    }
    return {
        "nesting_too_deep": b"[" * 1500 + b"]" * 1500,
        "nesting_too_deep ": b'{"a":' * 1500 + b"1" + b"}" * 1500,
        "message_too_large": b'{"junk": "' + b"y" * 1_200_000 + b'"}',
        "schema_violation": json.dumps(big_invalid).encode(),
        "schema_violation ": json.dumps(extreme).encode(),
        "internal_error": encode(template | {"event_id": doomed_id}),
        # A tombstone (null value) once raised in triage and lost its batch.
        "invalid_json": None,
    }


async def _produce_large(bootstrap: str, topic: str, values: list[bytes | None]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 << 20)
    await producer.start()
    try:
        for value in values:
            # A tombstone needs a key (aiokafka: "Need at least one: key or value").
            await producer.send_and_wait(topic, value, key=b"gone" if value is None else None)
    finally:
        await producer.stop()


@pytest.mark.parametrize("processes", [0, 1], ids=["inline", "child-process"])
async def test_poison_messages_are_dead_lettered_and_the_200_after_them_counted(
    make_settings: SettingsFactory,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    processes: int,
) -> None:
    valid = _valid_events()
    doomed_id = "00000000-0000-4000-8000-0000000000e3"
    poison = _poison(valid[0], doomed_id)
    if processes == 0:
        # An unexpected exception for one message, injected where the worker
        # reduces an event (inline triage runs in this process).
        def failing_fact_of(event: Event) -> Any:
            if str(event.event_id) == doomed_id:
                raise RuntimeError("injected")
            return fact_of(event)

        monkeypatch.setattr(ingest, "fact_of", failing_fact_of)
    else:
        del poison["internal_error"]  # a child process cannot see the injection
    settings = make_settings(ingest_processes=processes, max_message_bytes=MAX_MESSAGE_BYTES)
    expected = expected_counts(valid)
    async with running_worker(settings, kafka_bootstrap) as worker:
        await _produce_large(kafka_bootstrap, settings.events_topic, list(poison.values()))
        await _produce_large(kafka_bootstrap, settings.events_topic, [encode(e) for e in valid])
        url = f"{worker.metrics.url}/metrics"

        async def observed() -> Any:
            return observed_counts(await scrape_async(url), expected)

        await wait_until(observed, lambda o: o == expected, 90, "the 200 valid events")
        samples = await wait_until(
            lambda: scrape_async(url),
            lambda s: sum_by(s, "spinewatch_events_deadlettered_total") >= len(poison),
            60,
            "every poison message dead-lettered",
        )
        letters = await consume(kafka_bootstrap, settings.deadletter_topic, len(poison) + 1, 10)
        ready, answer = await health(worker.metrics.url)

    assert sum_by(samples, "spinewatch_events_accepted_total") == 200
    assert sum_by(samples, "spinewatch_events_applied_total") == 200
    # Counted once each, and only once the broker had the letter.
    assert sum_by(samples, "spinewatch_events_deadlettered_total") == len(letters) == len(poison)
    by_reason: dict[str, list[Any]] = {}
    for record in letters:
        headers = dict(record.headers)
        by_reason.setdefault(headers["spinewatch-reason"].decode(), []).append((record, headers))
    assert sorted(by_reason) == sorted({name.strip() for name in poison})
    for reason, found in by_reason.items():
        wanted = sum(name.strip() == reason for name in poison)
        assert sum_by(samples, "spinewatch_events_deadlettered_total", reason=reason) == wanted
        assert len(found) == wanted
    for record, headers in by_reason["schema_violation"] + by_reason["message_too_large"]:
        original = next(
            v for v in poison.values() if v is not None and record.value == v[: len(record.value)]
        )
        assert (
            headers["spinewatch-original-sha256"] == hashlib.sha256(original).hexdigest().encode()
        )
        assert int(headers["spinewatch-original-bytes"]) == len(original)
        truncated = len(original) > settings.deadletter_max_bytes
        assert headers["spinewatch-truncated"] == (b"true" if truncated else b"false")
        assert len(record.value) == min(len(original), settings.deadletter_max_bytes)
    dates = [
        json.loads(h["spinewatch-errors"])
        for _, h in by_reason["schema_violation"]
        if int(h["spinewatch-original-bytes"]) < 10_000
    ]
    assert [[e["field"] for e in errors] for errors in dates] == [["occurred_at"]]
    assert b"9999" not in json.dumps(dates).encode()  # the value is never echoed
    assert ready == 200, answer["failing"]
