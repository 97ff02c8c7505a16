"""Pure parts of the engine: facts, codecs, triage and partition state (no Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from faust.exceptions import NotReady
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from spinewatch.adapters.state_codec import UnreadableState, decode_facts, encode_facts
from spinewatch.contracts import Event, parse_event
from spinewatch.domain.drift.events import sentinel_message
from spinewatch.domain.drift.site_charts import SentinelCase
from spinewatch.domain.outcomes.aggregates import replace_contribution
from spinewatch.domain.outcomes.contribution import Contribution, contribution_of
from spinewatch.domain.outcomes.facts import fact_of
from spinewatch.domain.outcomes.partition import PartitionState, apply_facts, rebuilt, settle
from spinewatch.domain.outcomes.records import ProcedureRecord, apply_event
from spinewatch.engine.drift_monitor import DriftMonitor
from spinewatch.engine.ingest import MessageOrigin, RejectReason, ingest_batch, triage
from spinewatch.engine.outcomes import OutcomeEngine, segment_key, segment_partition
from spinewatch.engine.stream_steps import publish_outbox
from spinewatch.runtime.failures import FailurePolicy
from tests.support import wait_until
from tests.test_domain import _event, pathway


def _with_retraction() -> list[Event]:
    events = pathway()
    retraction = _event(
        "event.retracted", events[0].procedure_id, 1000,
        target_event_id=str(events[-1].event_id), reason="entered_in_error",
    )  # fmt: skip
    return [*events, retraction]


def test_fact_batches_round_trip_through_the_codec() -> None:
    items = [(e.procedure_id.bytes, fact_of(e)) for e in _with_retraction()]
    assert {type(fact).__name__ for _, fact in items} == {
        "ProcedureFact",
        "FollowupFact",
        "ComplicationFact",
        "RetractionFact",
    }
    assert decode_facts(encode_facts(items)) == items


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc1",  # not msgpack
        b"\x92\x09\x90",  # format version 9
        b"\x92\x01\x91\x92\xa1p\x92\x09\xa1e",  # a fact with an unknown tag
    ],
)
def test_unreadable_fact_batches_are_refused(raw: bytes) -> None:
    with pytest.raises(UnreadableState):
        decode_facts(raw)


def test_incremental_totals_equal_a_rebuild_and_redelivery_is_ignored() -> None:
    events = [e for _ in range(5) for e in pathway()]
    items = [(e.procedure_id.bytes, fact_of(e)) for e in events]
    state = PartitionState()
    first = apply_facts(state, items[:17])
    settle(state)
    second = apply_facts(state, items)  # 17 redelivered
    assert state.dirty  # not settled yet: the totals lag until a read settles them
    settle(state)
    assert (len(first) + len(second), len(items) - len(second)) == (len(items), 17)
    # Segments in any order rebuild the same state.
    assert rebuilt([second, first]).totals == state.totals
    assert rebuilt([first + second]).records == state.records
    assert state.totals[next(iter(state.totals))]["patients"] == 5


FIXED_PIDS = tuple(uuid.UUID(int=n) for n in range(1, 6))
five_pids = st.lists(st.uuids(), min_size=5, max_size=5, unique=True)


def _varied_stream(pids: Sequence[uuid.UUID] = FIXED_PIDS) -> list[Event]:
    """Pathways plus every case that must leave the follow-up fast path.

    The same events for the same five procedure ids (event ids follow from
    content), so a Hypothesis example that draws the ids replays exactly.
    """
    first, second, third, fourth = (pathway(pid) for pid in pids[:4])
    pid = first[0].procedure_id
    # "Less analgesics at one week" is a tally held at 0; retracting that
    # follow-up takes the name out of the contribution (once a KeyError).
    less_week_1 = _event(
        "followup.recorded", fourth[0].procedure_id, 170, timepoint="week_1", vas=3,
        analgesic_use="less",
    )  # fmt: skip
    later_week_1 = _event("followup.recorded", pid, 400, timepoint="week_1", vas=1)
    no_pre = pathway(pids[4])
    procedure_without_pre = parse_event(
        json.dumps({**no_pre[0].model_dump(mode="json"), "pre_vas": None})
    )
    return [
        *first,
        *second,
        *third,
        procedure_without_pre,
        *no_pre[1:],
        later_week_1,  # a second follow-up at one timepoint: the newer wins
        fourth[0],
        fourth[1],
        less_week_1,
        *fourth[3:],
        _event(  # a retracted follow-up whose tallies include a 0
            "event.retracted", fourth[0].procedure_id, 600,
            target_event_id=str(less_week_1.event_id), reason="entered_in_error",
        ),
        _event(  # a retracted follow-up
            "event.retracted", second[0].procedure_id, 500,
            target_event_id=str(second[2].event_id), reason="entered_in_error",
        ),
        _event(  # a retracted procedure voids its record
            "event.retracted", third[0].procedure_id, 500,
            target_event_id=str(third[0].event_id), reason="entered_in_error",
        ),
    ]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_batching_and_order_gives_the_totals_of_a_rebuild(data: st.DataObject) -> None:
    # Batches of one fact take the follow-up fast path wherever it applies.
    # Drawn, not uuid4: ids decide the order of sets and dicts inside, and
    # a replayed example must meet the same order.
    stream = _varied_stream(data.draw(five_pids, label="procedure ids"))
    items = [(e.procedure_id.bytes, fact_of(e)) for e in stream]
    shuffled = data.draw(st.permutations(items))
    state = PartitionState()
    start = 0
    while start < len(shuffled):
        size = data.draw(st.integers(1, 4))
        apply_facts(state, shuffled[start : start + size])
        start += size
        if data.draw(st.booleans()):
            settle(state)
    settle(state)
    reference = rebuilt([items])
    assert state.totals == reference.totals
    assert state.contributions == reference.contributions


def test_engine_writes_only_new_facts_and_rebuilds_from_its_segments() -> None:
    events = [e for _ in range(3) for e in pathway()]
    items = [(e.procedure_id.bytes, fact_of(e)) for e in events]
    engine = OutcomeEngine(CollectorRegistry())
    table: dict[str, bytes] = {}
    engine.apply(table, 2, 10, encode_facts(items[:5]))
    engine.apply(table, 2, 11, encode_facts(items))  # 5 of them redelivered
    engine.apply(table, 2, 12, encode_facts(items[:5]))  # nothing new: no segment
    assert sorted(table) == [segment_key(2, 10), segment_key(2, 11)]
    assert decode_facts(table[segment_key(2, 11)]) == items[5:]
    assert {segment_partition(key) for key in table} == {2}
    assert segment_partition(segment_key(3, 7).encode()) == 3  # as RocksDB returns keys
    before = engine.totals({2})
    fresh = OutcomeEngine(CollectorRegistry())
    fresh.rebuild(table.items(), {1, 2})
    assert fresh.totals({1, 2}) == before
    assert fresh.totals({1}) == {}
    fresh.rebuild(table.items(), {1})  # partition 2 moved away
    assert fresh.totals({1, 2}) == {}


def _raw(event_index: int = 0) -> bytes:
    return pathway()[event_index].model_dump_json().encode()


def test_triage_single_and_bulk_messages() -> None:
    assert len(triage(_raw()).accepted) == 1
    bulk = b"[" + b",".join(_raw(i) for i in range(4)) + b"]"
    assert len(triage(bulk).accepted) == 4
    broken = json.loads(bulk)
    broken[2]["vas"] = "high"
    result = triage(json.dumps(broken).encode())
    assert len(result.accepted) == 3
    (rejected,) = result.rejected
    assert (rejected.index, rejected.reason) == (2, RejectReason.SCHEMA_VIOLATION)
    assert [e.location for e in rejected.errors] == ["vas"]
    assert json.loads(rejected.raw) == broken[2]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{oops", RejectReason.INVALID_JSON),
        (b"[1, 2", RejectReason.INVALID_JSON),
        (b'"text"', RejectReason.NOT_AN_EVENT),
        (b'{"event_type": "patient.admitted"}', RejectReason.UNKNOWN_EVENT_TYPE),
    ],
)
def test_triage_names_why_a_message_is_rejected(raw: bytes, reason: RejectReason) -> None:
    result = triage(raw)
    assert not result.accepted
    assert [r.reason for r in result.rejected] == [reason]
    assert result.rejected[0].raw == raw


def test_dead_letter_headers_withhold_an_unknown_field_name() -> None:
    name = "Jane Doe 1961-03-02"
    payload = json.loads(_raw()) | {name: 1}
    raw = json.dumps(payload).encode()
    (letter,) = ingest_batch([(raw, MessageOrigin("events", 0, 7))]).dead_letters
    headers = dict(letter.headers)
    assert json.loads(headers["spinewatch-errors"])[0]["field"] == f"<field {len(payload)}>"
    assert not [key for key, value in letter.headers if name.encode() in value]
    assert letter.value == raw  # the payload itself is dead-lettered unchanged


def test_unsupported_schema_version_is_its_own_reason() -> None:
    payload = json.loads(_raw()) | {"schema_version": 2}
    (rejected,) = triage(json.dumps(payload).encode()).rejected
    assert rejected.reason is RejectReason.UNSUPPORTED_SCHEMA_VERSION


def test_record_of_facts_matches_record_of_events() -> None:
    events = pathway()
    record = ProcedureRecord()
    for event in events:
        record = apply_event(record, event)
    contribution = contribution_of(record)
    assert contribution is not None
    assert contribution.tally["patients"] == 1


def test_a_name_held_at_zero_can_leave_a_contribution() -> None:
    # "Same or more analgesics at one week: no" is a tally of 0, which the
    # totals do not keep; when a retraction removes that follow-up, the name
    # leaves the contribution. That once raised KeyError mid-settle and left
    # the totals half-updated (seen when the drift timer settled between a
    # follow-up and its retraction).
    key = next(
        iter(rebuilt([[(e.procedure_id.bytes, fact_of(e)) for e in _varied_stream()]]).totals)
    )
    with_followup = Contribution(key, {"patients": 1, "analgesic_same_or_more.week_1": 0})
    without = Contribution(key, {"patients": 1})
    totals: dict[Any, dict[str, int]] = {}
    replace_contribution(totals, None, with_followup)
    assert totals == {key: {"patients": 1}}
    replace_contribution(totals, with_followup, without)
    assert totals == {key: {"patients": 1}}


STRATUM = ("pvp", "metastasis")


class _FlakyTopic:
    """A topic edge whose broker refuses sends after `works` of them (a stopping producer)."""

    def __init__(self, works: int) -> None:
        self.works = works
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, *, key: str, value: bytes, headers: object = None) -> asyncio.Future[None]:
        if len(self.sent) >= self.works:
            raise NotReady("Producer service not yet started")
        self.sent.append((key, value))
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acknowledged.set_result(None)
        return acknowledged


async def test_drift_messages_a_stopped_producer_refused_stay_queued_in_order() -> None:
    monitor = DriftMonitor((), resolve_after_cases=1)
    cases = [
        SentinelCase(f"site-{n}", "death", bytes([n]) * 16, 1_700_000_000_000_000 + n, STRATUM)
        for n in range(3)
    ]
    queued = [(case.site_id, sentinel_message(case)) for case in cases]
    monitor.outbox.extend(queued)
    stopping = _FlakyTopic(works=1)
    # Refused sends are retried until acknowledged: the loop is stopped meanwhile.
    publishing = asyncio.ensure_future(publish_outbox(monitor, stopping))
    await wait_until(_returns(lambda: len(stopping.sent)), lambda n: n == 1, 10, "first send")
    publishing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await publishing
    # Everything taken goes back, in order (the first again: ids dedupe downstream).
    assert monitor.outbox == queued
    later = (cases[0].site_id, sentinel_message(cases[0]))
    monitor.outbox.append(later)  # found after the failed tick: goes out after the held ones
    running = _FlakyTopic(works=10)
    assert await publish_outbox(monitor, running) == 4
    assert [key for key, _ in running.sent] == ["site-0", "site-1", "site-2", "site-0"]
    assert monitor.outbox == []


async def test_drift_messages_are_retried_until_the_broker_takes_them() -> None:
    monitor = DriftMonitor((), resolve_after_cases=1)
    case = SentinelCase("site-1", "death", b"x" * 16, 1_700_000_000_000_000, STRATUM)
    monitor.outbox.append((case.site_id, sentinel_message(case)))
    recovering = _FlakyTopic(works=0)

    async def broker_back() -> None:
        await asyncio.sleep(0.3)
        recovering.works = 10

    back = asyncio.ensure_future(broker_back())
    assert await publish_outbox(monitor, recovering, FailurePolicy(0.05, 0.1)) == 1
    await back
    assert [key for key, _ in recovering.sent] == ["site-1"]
    assert monitor.outbox == []


def _returns(value: Callable[[], int]) -> Callable[[], Awaitable[int]]:
    async def probe() -> int:
        return value()

    return probe
