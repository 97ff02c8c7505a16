"""End-to-end: poison input never stops the stream (issue 15, points 1-3).

Each poison message that once stopped ingest for good (measured on the
code before: 0 of the next 200 valid events were counted) is sent first,
then 200 valid events. Every poison message must come out as a dead letter
with its own reason, every valid event must be counted exactly (against
an independent expectation), and the dead-letter counter must equal what
the dead-letter topic really holds.

Forged fact batches go first, straight to the internal facts topic (issue
17): well-formed batches of real facts, unsigned, tampered with after
signing, and signed with a key the worker does not hold. None may change
a count; each must be dead-lettered with its reason and counted.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from spinewatch.adapters.kafka_clients import started
from spinewatch.adapters.message_signing import Keyring, TopicKind
from spinewatch.adapters.state_codec import encode_facts
from spinewatch.contracts import Event, Indication, ProcedureType, parse_event
from spinewatch.demo.synthetic.cohort import SiteProfile, encode, generate_cohort
from spinewatch.domain.outcomes.facts import fact_of
from spinewatch.engine import ingest
from spinewatch.engine.bootstrap import running_worker
from tests.conftest import SettingsFactory
from tests.expectation import expected_counts, observed_counts
from tests.probes import health
from tests.support import TEST_SIGNING_KEY, consume, scrape_async, sum_by, wait_until

pytestmark = pytest.mark.e2e

MAX_MESSAGE_BYTES = 1_000_000


def _cohort() -> tuple[dict[str, Any], ...]:
    site = SiteProfile("poison-site", 80, {(ProcedureType.PVP, Indication.HEMANGIOMA): 1.0})
    return generate_cohort(31, [site], duplicate_share=0, malformed=0, retractions=0).events


def _valid_events() -> list[dict[str, Any]]:
    events = list(_cohort()[:200])
    assert len(events) == 200
    return events


Record = tuple[bytes, bytes, list[tuple[str, bytes]]]


def _forged_fact_batches() -> dict[str, Record]:
    """Real facts of the same site's other procedures: applied, they would change its counts."""
    others = [parse_event(encode(e)) for e in _cohort()[200:260]]
    key = b"poison-site"
    batch = encode_facts([(e.procedure_id.bytes, fact_of(e)) for e in others])
    ours = Keyring(TEST_SIGNING_KEY.encode())
    theirs = Keyring(b"a key the worker has never seen, 32+ bytes")
    # Signed as the worker would sign the first half, then given the whole batch.
    half = encode_facts([(e.procedure_id.bytes, fact_of(e)) for e in others[:30]])
    return {
        "unsigned": (key, batch, []),
        "bad_signature": (key, batch, [ours.sign(TopicKind.FACTS, key, half)]),
        "unknown_key": (key, batch, [theirs.sign(TopicKind.FACTS, key, batch)]),
    }


async def _produce_with_headers(bootstrap: str, topic: str, records: list[Record]) -> None:
    async with started(AIOKafkaProducer(bootstrap_servers=bootstrap)) as producer:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers)


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
    forged = _forged_fact_batches()
    async with running_worker(settings, kafka_bootstrap) as worker:
        await _produce_with_headers(kafka_bootstrap, settings.facts_topic, list(forged.values()))
        await _produce_large(kafka_bootstrap, settings.events_topic, list(poison.values()))
        await _produce_large(kafka_bootstrap, settings.events_topic, [encode(e) for e in valid])
        url = f"{worker.metrics.url}/metrics"

        async def observed() -> Any:
            return observed_counts(await scrape_async(url), expected)

        await wait_until(observed, lambda o: o == expected, 90, "the 200 valid events")
        samples = await wait_until(
            lambda: scrape_async(url),
            lambda s: (
                sum_by(s, "spinewatch_events_deadlettered_total") >= len(poison)
                and sum_by(s, "spinewatch_fact_batches_deadlettered_total") >= len(forged)
            ),
            60,
            "every poison message and forged batch dead-lettered",
        )
        wanted = len(poison) + len(forged)
        records = await consume(kafka_bootstrap, settings.deadletter_topic, wanted + 1, 10)
        ready, answer = await health(worker.metrics.url)

    # Not one forged fact applied: the counts are the 200 valid events' alone.
    assert observed_counts(samples, expected) == expected
    assert sum_by(samples, "spinewatch_events_accepted_total") == 200
    assert sum_by(samples, "spinewatch_events_applied_total") == 200
    facts_topic = settings.facts_topic.encode()
    from_facts = [r for r in records if dict(r.headers)["spinewatch-source-topic"] == facts_topic]
    assert sorted(dict(r.headers)["spinewatch-reason"].decode() for r in from_facts) == sorted(
        forged
    )
    for record in from_facts:
        reason = dict(record.headers)["spinewatch-reason"].decode()
        assert record.value == forged[reason][1]  # kept as received, for investigation
        labels = {"reason": reason}
        assert sum_by(samples, "spinewatch_fact_batches_deadlettered_total", **labels) == 1
    letters = [r for r in records if r not in from_facts]
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
