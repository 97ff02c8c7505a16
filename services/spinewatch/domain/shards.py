"""Shards: the unit of state a worker stores and writes to its changelog.

A site's procedures are spread over a fixed number of shards by a hash of
the procedure id. One changelog write then covers every event of a batch
that touched the shard, which is what makes bulk replay fast, while a shard
stays small enough that writing it is cheap.

Cohort totals are never stored: they are the sum of the contributions of
the records a worker holds, kept up to date by "subtract the old
contribution, add the new one", and rebuilt from the shards whenever
partitions move. So a restarted or rebalanced worker reports exactly what a
single clean pass would.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from spinewatch.domain.aggregates import add_into, replace_contribution
from spinewatch.domain.contribution import AggregateKey, Contribution, Tally, contribution_of
from spinewatch.domain.facts import Fact
from spinewatch.domain.records import ProcedureRecord, apply_fact

Totals = dict[AggregateKey, Tally]

_EMPTY = ProcedureRecord()


def shard_key(site_id: str, procedure_id: str, shards_per_site: int) -> str:
    # crc32, not hash(): the same procedure must land in the same shard in
    # every process and after every restart.
    shard = zlib.crc32(procedure_id.encode()) % shards_per_site
    return f"{site_id}/{shard:04d}"


@dataclass(slots=True)
class ShardState:
    """The records of one shard, and the partition whose changelog holds it."""

    partition: int
    records: dict[str, ProcedureRecord] = field(default_factory=dict)
    # Last contribution of each record, so an update can subtract it. A
    # cache, not state: rebuilt from the records after decoding.
    contributions: dict[str, Contribution] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ShardUpdate:
    applied: int  # facts new to their record
    duplicates: int  # facts already held (redelivery, replay)


def apply_to_shard(
    state: ShardState, items: Iterable[tuple[str, Fact]], totals: Totals
) -> ShardUpdate:
    """Add (procedure_id, fact) pairs to the shard and move their cohort totals."""
    touched: set[str] = set()
    applied = duplicates = 0
    for procedure_id, fact in items:
        record = state.records.get(procedure_id, _EMPTY)
        updated = apply_fact(record, fact)
        if updated is record:
            duplicates += 1
            continue
        state.records[procedure_id] = updated
        touched.add(procedure_id)
        applied += 1
    for procedure_id in touched:
        new = contribution_of(state.records[procedure_id])
        old = state.contributions.pop(procedure_id, None)
        replace_contribution(totals, old, new)
        if new is not None:
            state.contributions[procedure_id] = new
    return ShardUpdate(applied=applied, duplicates=duplicates)


def rebuild_totals(states: Iterable[ShardState]) -> Totals:
    """Cohort totals from scratch, refreshing each shard's contribution cache."""
    totals: Totals = {}
    for state in states:
        state.contributions.clear()
        for procedure_id, record in state.records.items():
            contribution = contribution_of(record)
            if contribution is None:
                continue
            state.contributions[procedure_id] = contribution
            add_into(totals.setdefault(contribution.key, {}), contribution.tally)
    return totals
