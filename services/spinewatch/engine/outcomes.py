"""The outcomes engine's runtime: what the stream agents call, what /metrics reads.

This module holds no Kafka code. The agents (`spinewatch.engine.app`) hand it
triaged batches (`spinewatch.engine.ingest`) to count, and fact batches with table
access; it applies facts to the records of the partition they belong to,
and appends what was new to the changelog table as one segment per
batch. Every step is synchronous, so the records, the totals and the
segment written move together with no await in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from spinewatch.adapters.message_signing import SIGNATURE_FAULTS
from spinewatch.adapters.state_codec import UnreadableState, decode_facts, encode_facts
from spinewatch.adapters.state_snapshot import Refused, SnapshotStore
from spinewatch.domain.outcomes.aggregates import add_into
from spinewatch.domain.outcomes.contribution import AggregateKey, Tally
from spinewatch.domain.outcomes.facts import Fact
from spinewatch.domain.outcomes.partition import PartitionState, apply_facts, rebuilt, settle
from spinewatch.engine.drift_monitor import DriftMonitor
from spinewatch.engine.followup_monitor import FollowupMonitor
from spinewatch.engine.ingest import IngestResult
from spinewatch.engine.silence_monitor import SilenceMonitor
from spinewatch.runtime.failures import RejectReason, export_at_zero
from spinewatch.runtime.health import Check

log = logging.getLogger(__name__)

# The changelog table: segment key -> encoded fact batch.
SegmentTable = MutableMapping[str, bytes]


def segment_key(partition: int, offset: int) -> str:
    """Deterministic: a redelivered fact batch rewrites the same segment."""
    return f"{partition:05d}/{offset:016d}"


def segment_partition(key: str | bytes) -> int:
    # A disk store (RocksDB) hands raw keys back as bytes.
    text = key.decode() if isinstance(key, bytes) else key
    return int(text.partition("/")[0])


def _text(key: str | bytes) -> str:
    return key.decode() if isinstance(key, bytes) else key


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
        self.fact_batches_dead_lettered = Counter(
            "spinewatch_fact_batches_deadlettered",
            "Fact batches of the internal topic that could not be applied, by reason.",
            ["reason"],
            registry=registry,
        )
        export_at_zero(self.dead_lettered, RejectReason)
        export_at_zero(
            self.fact_batches_dead_lettered,
            (RejectReason.UNREADABLE_FACTS, RejectReason.INTERNAL_ERROR, *SIGNATURE_FAULTS),
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
        self.unreadable_segments = Counter(
            "spinewatch_changelog_segments_unreadable",
            "Changelog segments a rebuild could not read and skipped.",
            registry=registry,
        )
        self.rebuilds = Counter(
            "spinewatch_state_rebuilds",
            "Rebuilds of the cohort totals from the changelog after partitions moved.",
            registry=registry,
        )
        self.snapshots = Counter(
            "spinewatch_state_snapshot_loads",
            "Partition state snapshots at recovery: loaded, or refused (missing, "
            "stale, unreadable, other_version) and the partition rebuilt in full.",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("loaded", "missing", "stale", "unreadable", "other_version"):
            self.snapshots.labels(outcome)  # at zero from the start (see export_at_zero)
        self.snapshot_failures = Counter(
            "spinewatch_state_snapshot_write_failures",
            "Partition state snapshots that could not be written (disk full, permissions).",
            registry=registry,
        )
        self.open_procedures = Gauge(
            "spinewatch_procedures_held",
            "Procedures held in actively owned partitions.",
            registry=registry,
        )


class OutcomeEngine:
    def __init__(
        self,
        registry: CollectorRegistry,
        settle_after: int = 5_000,
        drift: DriftMonitor | None = None,
        silence: SilenceMonitor | None = None,
        followup: FollowupMonitor | None = None,
        *,
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self.registry = registry
        # Dirty records a partition may hold before its totals are settled
        # without a reader asking: bounds the work a scrape can meet, and
        # keeps settling interleaved with the ingest processes' work rather
        # than left for one long pause.
        self.settle_after = settle_after
        self.metrics = EngineMetrics(registry)
        # Records and totals of the partitions this worker actively owns,
        # rebuilt from the changelog table on every recovery.
        self.partitions: dict[int, PartitionState] = {}
        # Partitions of the segments the last rebuild had to skip (-1: unknown).
        self.skipped_segments: list[int] = []
        # Drift charts follow every settled change (none when no metric is monitored).
        self.drift = drift or DriftMonitor((), resolve_after_cases=1)
        # Per-site heartbeats in arrival time (none watched unless given a rule).
        self.silence = silence or SilenceMonitor(None)
        # Follow-up completeness (None: no schedule, nothing tracked).
        self.followup = followup
        # Snapshots of the partitions' state on local disk (None: always rebuild),
        # and the segment keys each partition's state is built from.
        self.snapshots = snapshots
        self.covered: dict[int, set[str]] = {}

    def count_ingested(self, result: IngestResult) -> None:
        """Add a triaged batch to the stream counters (once per batch, not per event)."""
        for path, count in result.messages_by_path.items():
            self.metrics.messages.labels(path).inc(count)
        for event_type, count in result.accepted_by_type.items():
            self.metrics.accepted.labels(event_type).inc(count)
        for reason, count in result.rejected_by_reason.items():
            self.metrics.dead_lettered.labels(reason).inc(count)

    # -- state: one fact batch (one site) -> records, totals, one segment
    def apply(self, table: SegmentTable, partition: int, offset: int, raw: bytes) -> None:
        items = decode_facts(raw)
        state = self.partitions.setdefault(partition, PartitionState())
        new = apply_facts(state, items)
        if len(state.dirty) >= self.settle_after:
            self._settle(partition, state)
        self.metrics.applied.inc(len(new))
        self.metrics.duplicates.inc(len(items) - len(new))
        if new:
            # The batch as received when all of it was new (the usual case).
            key = segment_key(partition, offset)
            table[key] = raw if len(new) == len(items) else encode_facts(new)
            self.covered.setdefault(partition, set()).add(key)
            self._refresh_held()

    def rebuild(
        self, segments: Iterable[tuple[str | bytes, bytes]], active_partitions: set[int]
    ) -> None:
        """Records and totals from scratch for the partitions this worker now owns."""
        owned: dict[int, list[list[tuple[bytes, Fact]]]] = {p: [] for p in active_partitions}
        covered: dict[int, set[str]] = {p: set() for p in active_partitions}
        unreadable: list[int] = []
        for key, raw in segments:
            partition = -1
            try:
                partition = segment_partition(key)
                if partition in owned:
                    owned[partition].append(decode_facts(raw))
                    covered[partition].add(_text(key))
            except (UnreadableState, ValueError):
                # One bad segment used to fail every recovery, for good:
                # skip it, count it, and say so on /readyz.
                unreadable.append(partition)
        states = {p: rebuilt(batches) for p, batches in owned.items()}
        self._install(states, covered, unreadable)

    def recover(self, table: Mapping[Any, bytes], active_partitions: set[int]) -> None:
        """As `rebuild`, from each partition's snapshot and the segments after it
        where the snapshot stands for them (see `state_snapshot`), else in full.

        `table` maps segment keys (str, or bytes from a disk store) to segments.
        """
        store = self.snapshots
        if store is None:
            self.rebuild(table.items(), active_partitions)
            return
        began = time.monotonic()
        keys: dict[int, dict[str, str | bytes]] = {p: {} for p in active_partitions}
        unreadable: list[int] = []
        for key in table:  # keys only: the values of covered segments are not read
            try:
                partition = segment_partition(key)
            except ValueError:
                unreadable.append(-1)
                continue
            if partition in keys:
                keys[partition][_text(key)] = key
        states: dict[int, PartitionState] = {}
        covered: dict[int, set[str]] = {}
        for partition, held in keys.items():
            try:
                loaded = store.load(partition, held)
            except Refused as refused:
                self.metrics.snapshots.labels(refused.reason).inc()
                log.info("partition %d rebuilt in full: snapshot %s (%s)",
                         partition, refused.reason, refused)  # fmt: skip
                tail, state = sorted(held), PartitionState()
            else:
                self.metrics.snapshots.labels("loaded").inc()
                tail, state = loaded.tail, loaded.state
            covered[partition] = set(held)
            for text in tail:
                try:
                    apply_facts(state, decode_facts(table[held[text]]))
                except UnreadableState:
                    # Not covered: a snapshot must not claim facts it lacks.
                    covered[partition].discard(text)
                    unreadable.append(partition)
            states[partition] = state
        self._install(states, covered, unreadable)
        log.info("state recovered in %.2f s", time.monotonic() - began)

    def save_snapshots(self) -> None:
        """Write a snapshot of every held partition (a cache for the next recovery)."""
        if self.snapshots is None:
            return
        began = time.monotonic()
        for partition, state in self.partitions.items():
            self._settle(partition, state)  # the charts follow what the totals move
            try:
                self.snapshots.save(partition, state, self.covered.get(partition, ()))
            except OSError as exc:
                # Only the next restart is slower (a full rebuild); say so, once per try.
                self.metrics.snapshot_failures.inc()
                log.error("state snapshot of partition %d not written: %s", partition, exc)
        log.info("state snapshots written in %.2f s", time.monotonic() - began)

    def _install(
        self,
        states: dict[int, PartitionState],
        covered: dict[int, set[str]],
        unreadable: list[int],
    ) -> None:
        self.skipped_segments = unreadable
        if unreadable:
            self.metrics.unreadable_segments.inc(len(unreadable))
            log.error(
                "%d changelog segments could not be read and were skipped (partitions %s)",
                len(unreadable), sorted(set(unreadable)),
            )  # fmt: skip
        for state in states.values():
            settle(state)  # a snapshot's tail: the charts rebuild from the settled state
        self.partitions, self.covered = states, covered
        self.drift.rebuild(self.partitions)
        if self.followup is not None:
            self.followup.rebuild(self.partitions)
        self.metrics.rebuilds.inc()
        self._refresh_held()
        log.info("cohort totals rebuilt for partitions %s", sorted(states))

    def changelog_check(self) -> list[Check]:
        """Red (readiness) while the held state lacks segments it could not read."""
        skipped = self.skipped_segments
        reason = (
            f"{len(skipped)} changelog segments could not be read; the totals of "
            f"partitions {sorted(set(skipped))} lack their facts"
        )
        return [Check("changelog", not skipped, reason, liveness=False)]

    def totals(self, active_partitions: set[int]) -> dict[AggregateKey, Tally]:
        """Cohort totals summed over the actively owned partitions only."""
        summed: dict[AggregateKey, Tally] = {}
        for partition, state in self.partitions.items():
            if partition not in active_partitions:
                continue
            self._settle(partition, state)
            for key, tally in state.totals.items():
                add_into(summed.setdefault(key, {}), tally)
        return summed

    def followup_lost(self, active_partitions: set[int]) -> dict[AggregateKey, Tally]:
        """Lost follow-ups per cohort, for the pessimistic figures (after `totals`)."""
        if self.followup is None:
            return {}
        self.followup.refresh(active_partitions)
        return self.followup.lost(active_partitions)

    def refresh_drift(self, active_partitions: set[int]) -> None:
        """Settle, then refold the charts that changed; new messages go to the outbox."""
        for partition in active_partitions:
            state = self.partitions.get(partition)
            if state is not None:
                self._settle(partition, state)
        # Follow-ups first: a VAS signal built next reads their states.
        if self.followup is not None:
            self.followup.refresh(active_partitions)
        self.drift.refresh(active_partitions)
        # Silences go out with the charts' messages, on the same topic.
        self.drift.outbox.extend(self.silence.take(active_partitions))

    def _settle(self, partition: int, state: PartitionState) -> None:
        changed = settle(state)
        self.drift.track(partition, state, changed)
        if self.followup is not None:
            self.followup.track(partition, state, changed)

    def _refresh_held(self) -> None:
        held = sum(len(state.records) for state in self.partitions.values())
        self.metrics.open_procedures.set(held)
