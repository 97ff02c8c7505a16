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

from collections import Counter
from collections.abc import Collection, Container, Iterable
from dataclasses import dataclass, field

from spinewatch.domain.outcomes.aggregates import add_into, replace_contribution
from spinewatch.domain.outcomes.contribution import (
    AggregateKey,
    Contribution,
    Tally,
    contribution_of,
    followup_delta,
)
from spinewatch.domain.outcomes.facts import Fact
from spinewatch.domain.outcomes.records import ProcedureRecord, apply_fact

Totals = dict[AggregateKey, Tally]
FactItem = tuple[bytes, Fact]  # (procedure id as UUID bytes, fact)

_EMPTY = ProcedureRecord()


@dataclass(slots=True)
class PartitionState:
    records: dict[bytes, ProcedureRecord] = field(default_factory=dict)
    # Last contribution of each record, so an update can subtract it.
    contributions: dict[bytes, Contribution] = field(default_factory=dict)
    totals: Totals = field(default_factory=dict)
    # Records changed since the totals were last settled, with how many facts
    # each gained.
    dirty: Counter[bytes] = field(default_factory=Counter)


def apply_facts(state: PartitionState, items: Iterable[FactItem]) -> list[FactItem]:
    """Add facts to their records and return the facts that were new.

    A fact already held (a redelivery or a replay) is left out of the result,
    so the caller persists only what changed and counts the rest as
    duplicates. The totals are not moved until `settle`.
    """
    new = add_facts(state, items)
    state.dirty.update(procedure_id for procedure_id, _ in new)
    return new


def settle(state: PartitionState) -> Collection[bytes]:
    """Bring the totals up to date with every record changed since the last call.

    Returns the procedures whose contributions were recomputed, for the
    drift charts to follow.
    """
    if not state.dirty:
        return ()
    dirty, state.dirty = state.dirty, Counter()
    # A record that gained exactly one fact may take the follow-up fast path.
    refresh_contributions(state, dirty, single_fact={p for p, n in dirty.items() if n == 1})
    return dirty.keys()


def add_facts(state: PartitionState, items: Iterable[FactItem]) -> list[FactItem]:
    """Add facts to their records without touching the totals (see `refresh_contributions`)."""
    records = state.records
    new: list[FactItem] = []
    for item in items:
        procedure_id, fact = item
        record = records.get(procedure_id, _EMPTY)
        updated = apply_fact(record, fact)
        if updated is not record:
            records[procedure_id] = updated
            new.append(item)
    return new


def refresh_contributions(
    state: PartitionState, procedure_ids: Iterable[bytes], single_fact: Container[bytes] = ()
) -> None:
    """Recompute the contribution of each named record, once, and move the totals.

    For a record in `single_fact` (its newest fact is the only one added
    since its contribution was computed), a follow-up is added as a delta
    when `followup_delta` allows it: same result, a fraction of the work.
    """
    records, contributions, totals = state.records, state.contributions, state.totals
    for procedure_id in procedure_ids:
        record = records[procedure_id]
        old = contributions.get(procedure_id)
        if old is not None and procedure_id in single_fact:
            delta = followup_delta(record)
            if delta is not None:
                old.tally.update(delta)  # names new to it: see followup_delta
                add_into(totals[old.key], delta)
                continue
        new = contribution_of(record)
        replace_contribution(totals, old, new)
        if new is None:
            contributions.pop(procedure_id, None)
        else:
            contributions[procedure_id] = new


def rebuilt(segments: Iterable[Iterable[FactItem]]) -> PartitionState:
    """A partition's state from its changelog segments, in any order."""
    state = PartitionState()
    for segment in segments:
        add_facts(state, segment)
    refresh_contributions(state, list(state.records))
    return state
