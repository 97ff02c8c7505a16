"""Pure parts of the engine: facts, codecs, triage and shards (no Kafka)."""

from __future__ import annotations

import json

import pytest

from spinewatch.adapters.state_codec import (
    UnreadableState,
    decode_facts,
    decode_shard,
    encode_facts,
    encode_shard,
)
from spinewatch.domain.contribution import contribution_of
from spinewatch.domain.facts import fact_from_row, fact_of, fact_to_row
from spinewatch.domain.records import ProcedureRecord, apply_event
from spinewatch.domain.shards import ShardState, apply_to_shard, rebuild_totals, shard_key
from spinewatch.ingest import RejectReason, triage
from tests.test_domain import pathway


def test_every_fact_survives_its_row_encoding() -> None:
    for event in pathway():
        fact = fact_of(event)
        assert fact_from_row(json.loads(json.dumps(fact_to_row(fact)))) == fact


def test_shard_and_fact_batch_codecs_round_trip() -> None:
    events = pathway() + pathway()
    state = ShardState(partition=3)
    totals: dict = {}  # type: ignore[type-arg]
    apply_to_shard(state, [(str(e.procedure_id), fact_of(e)) for e in events], totals)
    decoded = decode_shard(encode_shard(state))
    assert decoded.partition == 3
    assert decoded.records == state.records
    assert decoded.contributions == {}  # a cache, rebuilt rather than stored
    items = [(str(e.procedure_id), fact_of(e)) for e in events]
    assert decode_facts(encode_facts(items)) == items
    with pytest.raises(UnreadableState):
        decode_shard(b"\x93\x02\x00\x90")  # another format version
    with pytest.raises(UnreadableState):
        decode_facts(b"\xc1")


def test_incremental_shard_totals_equal_a_rebuild_and_redelivery_is_ignored() -> None:
    events = [e for _ in range(5) for e in pathway()]
    items = [(str(e.procedure_id), fact_of(e)) for e in events]
    state = ShardState(partition=0)
    totals: dict = {}  # type: ignore[type-arg]
    first = apply_to_shard(state, items[:17], totals)
    second = apply_to_shard(state, items, totals)  # 17 redelivered
    assert (first.applied + second.applied, second.duplicates) == (len(items), 17)
    assert totals == rebuild_totals([decode_shard(encode_shard(state))])
    assert totals[next(iter(totals))]["patients"] == 5


def test_shard_key_is_stable_and_bounded() -> None:
    keys = {shard_key("site-a", f"{i:032x}", 8) for i in range(500)}
    assert keys == {f"site-a/{n:04d}" for n in range(8)}
    assert shard_key("site-a", "abc", 8) == shard_key("site-a", "abc", 8)


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
