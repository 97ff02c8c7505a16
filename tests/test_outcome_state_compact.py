"""The compact outcome state (packed records, no per-procedure contributions)
and its snapshots hold exactly what the facts say.

The reference here is the definition, built without the partition module:
each record is the tuple of its facts (`records.apply_fact`), and the totals
are the sum of `contribution_of` over the records.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from spinewatch.adapters import state_snapshot
from spinewatch.adapters.state_codec import encode_facts
from spinewatch.adapters.state_snapshot import SnapshotStore
from spinewatch.contracts import parse_event
from spinewatch.domain.outcomes import packed
from spinewatch.domain.outcomes.aggregates import add_into
from spinewatch.domain.outcomes.contribution import AggregateKey, Tally, contribution_of
from spinewatch.domain.outcomes.facts import Fact, fact_of
from spinewatch.domain.outcomes.partition import FactItem, PartitionState, apply_facts, settle
from spinewatch.domain.outcomes.records import ProcedureRecord, apply_fact
from spinewatch.engine.outcomes import OutcomeEngine, segment_key
from tests.strategies import any_event
from tests.test_engine_units import _varied_stream, five_pids


def _reference(
    items: Sequence[FactItem],
) -> tuple[dict[bytes, ProcedureRecord], dict[AggregateKey, Tally]]:
    records: dict[bytes, ProcedureRecord] = {}
    for procedure_id, fact in items:
        records[procedure_id] = apply_fact(records.get(procedure_id, ProcedureRecord()), fact)
    totals: dict[AggregateKey, Tally] = {}
    for record in records.values():
        contribution = contribution_of(record)
        if contribution is not None:
            add_into(totals.setdefault(contribution.key, {}), contribution.tally)
    return records, totals


@settings(max_examples=80, deadline=None)
@given(st.lists(any_event, min_size=1, max_size=40))
def test_a_packed_record_holds_its_facts_exactly(payloads: list[dict[str, object]]) -> None:
    facts: list[Fact] = [fact_of(parse_event(json.dumps(p))) for p in payloads]
    record = packed.pack(facts[:1])
    for fact in facts[1:]:  # past 15 facts the array header grows: still exact
        record = packed.appended(record, fact)
    assert packed.unpack(record) == tuple(facts)
    assert record == packed.pack(facts)
    assert all(packed.holds(record, fact.event_id) for fact in facts)
    assert not packed.holds(record, uuid.uuid4().bytes)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_the_compact_state_equals_the_definition_in_any_order_and_batching(
    data: st.DataObject,
) -> None:
    stream = _varied_stream(data.draw(five_pids, label="procedure ids"))
    items = data.draw(st.permutations([(e.procedure_id.bytes, fact_of(e)) for e in stream]))
    state = PartitionState()
    start = 0
    while start < len(items):
        size = data.draw(st.integers(1, 4))
        apply_facts(state, items[start : start + size] * data.draw(st.integers(1, 2)))
        start += size
        if data.draw(st.booleans()):
            settle(state)
        # Read between settles too (dirty records): what the facts so far say.
        so_far, _ = _reference(items[:start])
        assert dict(state.contributions) == {
            p: c for p, r in so_far.items() if (c := contribution_of(r)) is not None
        }
    settle(state)
    records, totals = _reference(items)
    assert dict(state.records) == records
    assert state.totals == totals
    expected = {p: contribution_of(r) for p, r in records.items()}
    assert dict(state.contributions) == {p: c for p, c in expected.items() if c is not None}


# --- snapshots ---------------------------------------------------------------


def _batches() -> list[list[FactItem]]:
    """Three batches per partition-to-be: pathways, their follow-ups, retractions."""
    stream = _varied_stream()
    items = [(e.procedure_id.bytes, fact_of(e)) for e in stream]
    return [items[:9], items[9:20], items[20:]]


def _engine(tmp_path: Path) -> OutcomeEngine:
    return OutcomeEngine(CollectorRegistry(), snapshots=SnapshotStore(tmp_path))


def _feed(
    engine: OutcomeEngine, table: dict[str, bytes], offset: int, batch: list[FactItem]
) -> None:
    engine.apply(table, 0, offset, encode_facts(batch))


def _full_rebuild(table: dict[str, bytes]) -> OutcomeEngine:
    engine = OutcomeEngine(CollectorRegistry())
    engine.rebuild(table.items(), {0})
    return engine


def _facts(engine: OutcomeEngine) -> dict[bytes, set[Fact]]:
    # A record is a set of facts: segments applied in another order hold them in another.
    return {p: set(r.facts) for p, r in engine.partitions[0].records.items()}


def _same_state(a: OutcomeEngine, b: OutcomeEngine) -> None:
    assert a.totals({0}) == b.totals({0})
    assert _facts(a) == _facts(b)


def _outcome(engine: OutcomeEngine, label: str) -> float:
    value = engine.registry.get_sample_value(
        "spinewatch_state_snapshot_loads_total", {"outcome": label}
    )
    return value or 0.0


def test_a_snapshot_and_the_segments_after_it_equal_a_full_rebuild(tmp_path: Path) -> None:
    first, second, third = _batches()
    table: dict[str, bytes] = {}
    writer = _engine(tmp_path)
    _feed(writer, table, 1, first)
    _feed(writer, table, 2, second)
    writer.save_snapshots()
    _feed(writer, table, 3, third)  # the tail, after the snapshot
    restarted = _engine(tmp_path)
    restarted.recover(table, {0})
    assert _outcome(restarted, "loaded") == 1
    _same_state(restarted, _full_rebuild(table))
    _same_state(restarted, writer)
    # Its records are the snapshot's plus the tail: a later snapshot covers all three.
    assert restarted.covered[0] == set(table)


def test_records_numbered_by_another_process_are_renumbered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, _ = _batches()
    table: dict[str, bytes] = {}
    writer = _engine(tmp_path)
    _feed(writer, table, 1, first + second)
    writer.save_snapshots()
    # A process that met another profile first numbers every profile differently.
    fresh = packed.Profiles()
    fresh.by_number.append(("elsewhere", "pvp", "osteoporotic", None, (), False))
    fresh.numbers[fresh.by_number[0]] = 0
    monkeypatch.setattr(packed, "PROFILES", fresh)
    restarted = _engine(tmp_path)
    restarted.recover(table, {0})
    assert _outcome(restarted, "loaded") == 1
    _same_state(restarted, _full_rebuild(table))


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        ("delete", "missing"),
        ("garbage", "unreadable"),
        ("truncate", "unreadable"),
        ("lose_a_segment", "stale"),
        ("gain_a_covered_segment", "stale"),
        ("other_algorithm", "other_version"),
    ],
)
def test_a_snapshot_that_cannot_stand_for_the_rebuild_falls_back_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spoil: str, reason: str
) -> None:
    first, second, third = _batches()
    table: dict[str, bytes] = {}
    writer = _engine(tmp_path)
    _feed(writer, table, 5, first)
    _feed(writer, table, 6, second)
    writer.save_snapshots()
    _feed(writer, table, 7, third)
    path = SnapshotStore(tmp_path).path(0)
    if spoil == "delete":
        path.unlink()
    elif spoil == "garbage":
        path.write_bytes(b"\x00not a snapshot")
    elif spoil == "truncate":
        path.write_bytes(path.read_bytes()[:-40])
    elif spoil == "lose_a_segment":
        del table[segment_key(0, 5)]  # the snapshot holds facts the table no longer has
    elif spoil == "gain_a_covered_segment":
        table[segment_key(0, 1)] = encode_facts(third)  # before its last key, not in it
    else:
        monkeypatch.setattr(state_snapshot, "ALGORITHM", "another release")
    restarted = _engine(tmp_path)
    restarted.recover(table, {0})
    assert (_outcome(restarted, reason), _outcome(restarted, "loaded")) == (1, 0)
    _same_state(restarted, _full_rebuild(table))
