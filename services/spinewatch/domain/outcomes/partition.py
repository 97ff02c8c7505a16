"""Partition state: the procedure records a worker holds for one partition.

A partition's durable state is its changelog: an append-only series of fact
segments, each holding the facts one batch added. The records, and the
cohort totals derived from them, are a pure function of those facts. So a
restarted or rebalanced worker rebuilds exactly what a single clean pass
would, and a batch writes one segment however many procedures it touched
(no procedure is ever re-encoded).

Cohort totals are the sum of each record's contribution, kept up to date by
"subtract the old contribution, add the new one". That update is deferred:
applying facts only marks their records dirty, and `settle` recomputes each
dirty record once. A replay delivers a procedure and its follow-ups close
together, so one recomputation then covers several facts; whoever reads the
totals settles first, so a read is always exact.
"""

from __future__ import annotations

from collections.abc import Collection, ItemsView, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from spinewatch.domain.outcomes import packed
from spinewatch.domain.outcomes.aggregates import add_into, replace_contribution
from spinewatch.domain.outcomes.contribution import (
    AggregateKey,
    Contribution,
    Tally,
    contribution_of,
    keyed_followup_delta,
)
from spinewatch.domain.outcomes.facts import Fact
from spinewatch.domain.outcomes.records import ProcedureRecord

Totals = dict[AggregateKey, Tally]
FactItem = tuple[bytes, Fact]  # (procedure id as UUID bytes, fact)
Packed = dict[bytes, bytes]  # procedure id -> its record, packed

# Contributions computed at settles and kept for their next reader (the
# drift charts, at their next refresh), at most this many per partition.
RECENT_CONTRIBUTIONS = 20_000


class Records(Mapping[bytes, ProcedureRecord]):
    """The partition's records, decoded from their packed form when read."""

    __slots__ = ("_packed",)

    def __init__(self, packed_records: Packed) -> None:
        self._packed = packed_records

    def __getitem__(self, procedure_id: bytes) -> ProcedureRecord:
        return ProcedureRecord(packed.unpack(self._packed[procedure_id]))

    def get(self, procedure_id: bytes, default: object = None) -> ProcedureRecord | None:  # type: ignore[override]
        raw = self._packed.get(procedure_id)
        return default if raw is None else ProcedureRecord(packed.unpack(raw))  # type: ignore[return-value]

    def __contains__(self, procedure_id: object) -> bool:
        return procedure_id in self._packed

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._packed)

    def __reversed__(self) -> Iterator[bytes]:
        return reversed(self._packed)

    def __len__(self) -> int:
        return len(self._packed)

    def packed_items(self) -> ItemsView[bytes, bytes]:
        """(procedure id, packed record), undecoded: for passes that search the bytes."""
        return self._packed.items()


class Contributions(Mapping[bytes, Contribution]):
    """Each known record's contribution, computed when read (voided and
    not-yet-known records have none)."""

    __slots__ = ("_dirty", "_packed", "_unknown", "recent")

    def __init__(
        self, packed_records: Packed, unknown: set[bytes], dirty: Mapping[bytes, object]
    ) -> None:
        self._packed, self._unknown, self._dirty = packed_records, unknown, dirty
        # Each settled record's contribution as of its last settle, for the
        # records settled lately (see RECENT_CONTRIBUTIONS): the drift charts
        # read them next, and the next settle of the record starts from it.
        self.recent: dict[bytes, Contribution] = {}

    def get(self, procedure_id: bytes, default: object = None) -> Contribution | None:  # type: ignore[override]
        if procedure_id not in self._dirty:  # a dirty record's entry is its old one
            found = self.recent.get(procedure_id)
            if found is not None:
                return found
        raw = self._packed.get(procedure_id)
        found = None if raw is None else contribution_of(ProcedureRecord(packed.unpack(raw)))
        return default if found is None else found  # type: ignore[return-value]

    def __getitem__(self, procedure_id: bytes) -> Contribution:
        found = self.get(procedure_id)
        if found is None:
            raise KeyError(procedure_id)
        return found

    def __contains__(self, procedure_id: object) -> bool:
        return isinstance(procedure_id, bytes) and self.get(procedure_id) is not None

    def __iter__(self) -> Iterator[bytes]:
        # Settled records are known by `unknown`; only dirty ones are decoded.
        unknown, dirty = self._unknown, self._dirty
        for procedure_id, raw in self._packed.items():
            if procedure_id in dirty:
                if ProcedureRecord(packed.unpack(raw)).live().procedure is not None:
                    yield procedure_id
            elif procedure_id not in unknown:
                yield procedure_id

    def __reversed__(self) -> Iterator[bytes]:  # as a dict's, in reverse
        return reversed(list(self))

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass(slots=True)
class PartitionState:
    packed: Packed = field(default_factory=dict)
    totals: Totals = field(default_factory=dict)
    # Records changed since the totals were last settled: each with its
    # packed form at that settle (None: it had no record) and how many facts
    # it gained since.
    dirty: dict[bytes, tuple[bytes | None, int]] = field(default_factory=dict)
    # Settled records with no contribution (no live procedure): few, and they
    # spare decoding every record to list the contributions.
    unknown: set[bytes] = field(default_factory=set)
    records: Records = field(init=False)
    contributions: Contributions = field(init=False)

    def __post_init__(self) -> None:
        self.records = Records(self.packed)
        self.contributions = Contributions(self.packed, self.unknown, self.dirty)


def apply_facts(state: PartitionState, items: Iterable[FactItem]) -> list[FactItem]:
    """Add facts to their records and return the facts that were new.

    A fact already held (a redelivery or a replay) is left out of the result,
    so the caller persists only what changed and counts the rest as
    duplicates. The totals are not moved until `settle`.
    """
    records, dirty = state.packed, state.dirty
    new: list[FactItem] = []
    for item in items:
        procedure_id, fact = item
        record = records.get(procedure_id)
        if record is None:
            records[procedure_id] = packed.pack((fact,))
        elif packed.holds(record, fact.event_id):
            continue
        else:
            records[procedure_id] = packed.appended(record, fact)
        new.append(item)
        before = dirty.get(procedure_id)
        dirty[procedure_id] = (record, 1) if before is None else (before[0], before[1] + 1)
    return new


def settle(state: PartitionState) -> Collection[bytes]:
    """Bring the totals up to date with every record changed since the last call.

    Returns the procedures whose contributions were recomputed, for the
    drift charts to follow.
    """
    if not state.dirty:
        return ()
    dirty = dict(state.dirty)
    state.dirty.clear()  # the same dict: `contributions` reads it
    recent, unknown = state.contributions.recent, state.unknown
    if len(recent) > RECENT_CONTRIBUTIONS:
        recent.clear()
    totals, records = state.totals, state.packed
    for procedure_id, (before, gained) in dirty.items():
        record = ProcedureRecord(packed.unpack(records[procedure_id]))
        old = recent.pop(procedure_id, None)  # its contribution as of `before`, if kept
        if gained == 1 and before is not None:
            # A record that gained one fact, a follow-up, may take the fast path.
            keyed = keyed_followup_delta(record)
            if keyed is not None:
                key, delta = keyed
                add_into(totals[key], delta)
                if old is not None:  # the delta's names are new to it: see followup_delta
                    recent[procedure_id] = Contribution(
                        key, {**old.tally, **delta}, old.occurred_at_us
                    )
                continue
        if old is None and before is not None:
            old = contribution_of(ProcedureRecord(packed.unpack(before)))
        new = contribution_of(record)
        replace_contribution(totals, old, new)
        if new is None:
            unknown.add(procedure_id)
        else:
            unknown.discard(procedure_id)
            recent[procedure_id] = new
    return dirty.keys()


def rebuilt(segments: Iterable[Iterable[FactItem]]) -> PartitionState:
    """A partition's state from its changelog segments, in any order."""
    state = PartitionState()
    records = state.packed
    for segment in segments:
        for procedure_id, fact in segment:
            record = records.get(procedure_id)
            if record is None:
                records[procedure_id] = packed.pack((fact,))
            elif not packed.holds(record, fact.event_id):
                records[procedure_id] = packed.appended(record, fact)
    totals = state.totals
    for procedure_id, raw in state.packed.items():
        contribution = contribution_of(ProcedureRecord(packed.unpack(raw)))
        if contribution is None:
            state.unknown.add(procedure_id)
        else:
            add_into(totals.setdefault(contribution.key, {}), contribution.tally)
    return state


def state_of(packed_records: Packed, totals: Totals, unknown: set[bytes]) -> PartitionState:
    """A settled partition's state from what it holds (a snapshot)."""
    return PartitionState(packed_records, totals, unknown=unknown)
