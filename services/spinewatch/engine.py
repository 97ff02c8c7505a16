"""The outcomes engine's runtime: what the stream agents call, what /metrics reads.

This module holds no Kafka code. The agents (`spinewatch.app`) hand it raw
message values and table access; it triages, reduces events to facts,
applies them to shards and keeps the cohort totals of the partitions this
worker actively owns. Every step is synchronous, so an update of a shard and
of the totals happens with no await in between: the totals always equal the
sum over the shards held, even while partitions move.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from spinewatch.domain.aggregates import add_into
from spinewatch.domain.contribution import AggregateKey, Contribution, Tally
from spinewatch.domain.facts import Fact, fact_of
from spinewatch.domain.shards import ShardState, Totals, apply_to_shard, rebuild_totals, shard_key
from spinewatch.ingest import Rejected, triage

log = logging.getLogger(__name__)

ShardTable = MutableMapping[str, ShardState]


@dataclass(frozen=True, slots=True)
class MessageOrigin:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected payload with the reason, for the dead-letter topic."""

    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(slots=True)
class IngestResult:
    facts_by_site: dict[str, list[tuple[str, Fact]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    dead_letters: list[DeadLetter] = field(default_factory=list)


class EngineMetrics:
    """Counters of the stream itself, on the worker's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "spinewatch_messages_received",
            "Inbound messages, by path (one event, or a bulk array of events).",
            ["path"],
            registry=registry,
        )
        self.accepted = Counter(
            "spinewatch_events_accepted",
            "Inbound events that passed their contract.",
            ["event_type"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "spinewatch_events_deadlettered",
            "Inbound events sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.applied = Counter(
            "spinewatch_events_applied",
            "Events applied to procedure state for the first time.",
            registry=registry,
        )
        self.duplicates = Counter(
            "spinewatch_events_duplicate",
            "Events already held (redelivery or replay), ignored by design.",
            registry=registry,
        )
        self.rebuilds = Counter(
            "spinewatch_state_rebuilds",
            "Rebuilds of the cohort totals from the shards after partitions moved.",
            registry=registry,
        )
        self.open_procedures = Gauge(
            "spinewatch_procedures_held",
            "Procedures held in the shards of actively owned partitions.",
            registry=registry,
        )


class OutcomeEngine:
    def __init__(self, shards_per_site: int, registry: CollectorRegistry) -> None:
        self.shards_per_site = shards_per_site
        self.registry = registry
        self.metrics = EngineMetrics(registry)
        self.totals_by_partition: dict[int, Totals] = {}
        # Last contribution of each procedure, per shard key. Kept here, not
        # only on the shard object, because a disk store (RocksDB) hands out
        # a freshly decoded shard on every read.
        self._contributions: dict[str, dict[str, Contribution]] = {}
        self.procedures_by_partition: dict[int, int] = {}

    # -- ingest: raw message values -> fact batches per site, dead letters
    def ingest(self, messages: Iterable[tuple[bytes, MessageOrigin]]) -> IngestResult:
        result = IngestResult()
        for raw, origin in messages:
            triaged = triage(raw)
            bulk = raw.lstrip()[:1] == b"["
            self.metrics.messages.labels("bulk" if bulk else "single").inc()
            for event in triaged.accepted:
                self.metrics.accepted.labels(event.event_type).inc()
                result.facts_by_site[event.site_id].append(
                    (str(event.procedure_id), fact_of(event))
                )
            for rejected in triaged.rejected:
                self.metrics.dead_lettered.labels(rejected.reason.value).inc()
                result.dead_letters.append(_dead_letter(rejected, origin))
        return result

    # -- state: one fact batch (one site) -> shards and totals
    def apply(
        self, table: ShardTable, partition: int, site_id: str, items: list[tuple[str, Fact]]
    ) -> None:
        by_shard: dict[str, list[tuple[str, Fact]]] = defaultdict(list)
        for procedure_id, fact in items:
            by_shard[shard_key(site_id, procedure_id, self.shards_per_site)].append(
                (procedure_id, fact)
            )
        totals = self.totals_by_partition.setdefault(partition, {})
        for key, group in by_shard.items():
            state = table.get(key)
            if state is None:
                state = ShardState(partition)
            state.contributions = self._contributions.setdefault(key, state.contributions)
            held_before = len(state.records)
            update = apply_to_shard(state, group, totals)
            self.metrics.applied.inc(update.applied)
            self.metrics.duplicates.inc(update.duplicates)
            if update.applied:
                self.procedures_by_partition[partition] = (
                    self.procedures_by_partition.get(partition, 0)
                    + len(state.records)
                    - held_before
                )
                # One changelog write per shard per batch, however many
                # events of the batch landed in it.
                table[key] = state
        self._refresh_held()

    def rebuild(
        self, shards: Iterable[tuple[str, ShardState]], active_partitions: set[int]
    ) -> None:
        """Totals from scratch for the partitions this worker now owns."""
        owned: dict[int, list[ShardState]] = defaultdict(list)
        self._contributions = {}
        for key, state in shards:
            if state.partition in active_partitions:
                owned[state.partition].append(state)
                self._contributions[key] = state.contributions
        self.totals_by_partition = {p: rebuild_totals(owned[p]) for p in active_partitions}
        self.procedures_by_partition = {
            p: sum(len(s.records) for s in owned[p]) for p in active_partitions
        }
        self.metrics.rebuilds.inc()
        self._refresh_held()
        log.info("cohort totals rebuilt for partitions %s", sorted(active_partitions))

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.totals_by_partition.pop(partition, None)
            self.procedures_by_partition.pop(partition, None)
        self._refresh_held()

    def totals(self, active_partitions: set[int]) -> dict[AggregateKey, Tally]:
        """Cohort totals summed over the actively owned partitions only."""
        summed: dict[AggregateKey, Tally] = {}
        for partition, totals in self.totals_by_partition.items():
            if partition not in active_partitions:
                continue
            for key, tally in totals.items():
                add_into(summed.setdefault(key, {}), tally)
        return summed

    def _refresh_held(self) -> None:
        self.metrics.open_procedures.set(sum(self.procedures_by_partition.values()))


def _dead_letter(rejected: Rejected, origin: MessageOrigin) -> DeadLetter:
    errors = [
        {"field": error.location, "code": error.code, "message": error.message}
        for error in rejected.errors
    ]
    headers: list[tuple[str, bytes]] = [
        ("spinewatch-reason", rejected.reason.value.encode()),
        ("spinewatch-errors", json.dumps(errors).encode()),
        ("spinewatch-source-topic", origin.topic.encode()),
        ("spinewatch-source-partition", str(origin.partition).encode()),
        ("spinewatch-source-offset", str(origin.offset).encode()),
    ]
    if rejected.index is not None:
        headers.append(("spinewatch-bulk-index", str(rejected.index).encode()))
    return DeadLetter(rejected.raw, headers)


def header_map(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {name: value.decode() for name, value in items}
