"""Is a consumer keeping up? Lag, stalls and lost data, per owned partition.

The consumer's own loop reports what it processed (`processed`); the lag
probe (`adapters.kafka_lag`) reports, from the broker, where each log ends
and where the group committed. Together they answer, per partition this
process owns:

* waiting: the log holds records past the last one processed;
* stalled: records have waited longer than `stall_after_s` with nothing
  processed on that partition and the process doing nothing at all with
  its input (a stuck agent, a hung fetch), or longer than
  `partition_stall_s` with nothing processed on that partition while the
  process works on others (a partition faust forgot to resume): red, and
  liveness, since a restart is what fixes it. A process that is merely
  slow (a batch of 1,500 dead letters waiting for a loaded broker's
  acknowledgements) says it is active (`active`), and is not stalled;
* lost: the log ends below what this process had processed when the probe
  asked, or below the group's committed offset (a memory broker restarted
  empty): red and liveness, since the state held no longer matches any
  log;
* broker: no probe answered for `broker_timeout_s`: red, readiness only.

It also exports `spinewatch_consumer_lag_messages{group, topic, partition}`
and `spinewatch_oldest_unprocessed_event_age_seconds{group, topic}` (the
Kafka timestamp of the record at the committed offset, for partitions with
lag), from the last successful probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge

from spinewatch.adapters.kafka_lag import LagProbe, LagReading, PartitionLag
from spinewatch.errors import BrokerUnavailable
from spinewatch.runtime.health import Check
from spinewatch.runtime.supervisor import Heartbeat, LoopBody

Partition = tuple[str, int]  # (topic, partition)

# Probes in a row that must miss a processed topic before it counts as lost.
MISSING_PROBES_FOR_LOSS = 3


@dataclass
class _Progress:
    processed: int = -1  # highest offset processed
    advanced_at: float = 0.0
    waiting_since: float | None = None


class StreamHealth:
    def __init__(
        self,
        registry: CollectorRegistry,
        group: str,
        *,
        owned: Callable[[], Collection[Partition]] = frozenset,
        stall_after_s: float,
        broker_timeout_s: float,
        detect_loss: bool,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.group = group
        self.owned = owned
        self.stall_after_s = stall_after_s
        # A partition left unserved while its consumer is busy elsewhere (a
        # partition faust forgot to resume) is stuck too, judged more slowly.
        self.partition_stall_s = max(60.0, 12 * stall_after_s)
        self.broker_timeout_s = broker_timeout_s
        self.detect_loss = detect_loss
        self.clock = clock
        self.wall_clock = wall_clock
        self._progress: dict[Partition, _Progress] = {}
        self._before: dict[Partition, int] = {}
        # When this process last did anything with its input (a record
        # processed, a chunk triaged, a dead letter acknowledged): a long
        # batch is slow, not stuck. Process-wide: measured under a hostile
        # load, fact batches waited 5-6 s for a busy event loop while the
        # ingest agent was working through dead letters.
        self._active_at = clock()
        self._readings: dict[Partition, PartitionLag] = {}
        self._answered_at = clock()
        self._probe_error = ""
        self._lost: dict[Partition, str] = {}
        self._absent: dict[str, int] = {}  # topic: probes in a row without it
        self.lag = Gauge(
            "spinewatch_consumer_lag_messages",
            "Records in the log past the group's committed offset, per partition.",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self.oldest_age = Gauge(
            "spinewatch_oldest_unprocessed_event_age_seconds",
            "Age of the oldest record not yet committed as processed (0 when none waits).",
            ["group", "topic"],
            registry=registry,
        )

    # -- from the consumer ------------------------------------------------
    def processed(self, topic: str, partition: int, offset: int) -> None:
        progress = self._progress.setdefault((topic, partition), _Progress())
        if offset > progress.processed:
            progress.processed = offset
            progress.advanced_at = self._active_at = self.clock()

    def active(self) -> None:
        self._active_at = self.clock()

    # -- from the probe ---------------------------------------------------
    def processed_offsets(self) -> dict[Partition, int]:
        """What was processed so far: taken before a probe, whose ends must cover it."""
        return {key: progress.processed for key, progress in self._progress.items()}

    def probed(self, reading: LagReading, processed_before: dict[Partition, int]) -> None:
        """A probe's reading; `processed_before` was taken before the probe asked.

        Records processed while the probe was out may lie beyond the ends it
        saw; only what was processed before it asked must lie within them.
        """
        now = self.clock()
        self._answered_at = now
        self._probe_error = ""
        self._missing(reading.missing_topics)
        self._before = processed_before
        oldest: dict[str, float] = {}
        for partition in reading.partitions:
            key = (partition.topic, partition.partition)
            self._readings[key] = partition
            lag = partition.lag
            self.lag.labels(self.group, partition.topic, str(partition.partition)).set(lag)
            age = 0.0
            if lag and partition.oldest_timestamp_ms is not None:
                age = max(0.0, self.wall_clock() - partition.oldest_timestamp_ms / 1000)
            oldest[partition.topic] = max(oldest.get(partition.topic, 0.0), age)
            self._follow(key, partition, now)
        for topic, age in oldest.items():
            self.oldest_age.labels(self.group, topic).set(round(age, 3))

    def _missing(self, topics: Iterable[str]) -> None:
        if not self.detect_loss:
            return
        # One metadata answer without a topic is not proof: aiokafka leaves
        # out a topic whose leader is briefly unavailable. Loss is final
        # (liveness), so it takes MISSING_PROBES_FOR_LOSS answers in a row.
        missing = set(topics)
        self._absent = {t: self._absent.get(t, 0) + 1 for t in missing}
        for topic in missing:
            processed = [p for (t, p), progress in self._progress.items()
                         if t == topic and progress.processed >= 0]  # fmt: skip
            if processed and self._absent[topic] >= MISSING_PROBES_FOR_LOSS:
                self._lost[(topic, -1)] = "the topic no longer exists on the broker"

    def probe_failed(self, error: str) -> None:
        self._probe_error = error

    def _follow(self, key: Partition, reading: PartitionLag, now: float) -> None:
        progress = self._progress.setdefault(key, _Progress(advanced_at=now))
        processed_to = max(progress.processed + 1, reading.position)
        if reading.end > processed_to:
            if progress.waiting_since is None:
                progress.waiting_since = now
        else:
            progress.waiting_since = None
        if not self.detect_loss:
            return
        if reading.lost:
            self._lost[key] = f"committed offset {reading.committed} beyond the end {reading.end}"
        elif self._before.get(key, -1) + 1 > reading.end:
            self._lost[key] = (
                f"the log ends at {reading.end}, this process processed up to {self._before[key]}"
            )

    # -- health -----------------------------------------------------------
    def checks(self) -> list[Check]:
        now = self.clock()
        owned = set(self.owned())
        silent = now - self._answered_at
        broker = Check("broker", True)
        if silent > self.broker_timeout_s:
            error = self._probe_error or "no answer"
            broker = Check("broker", False, f"unreachable for {silent:.0f} s ({error})", False)
        stalled = []
        for key in sorted(owned):
            progress = self._progress.get(key)
            if progress is None or progress.waiting_since is None:
                continue
            unserved = max(progress.waiting_since, progress.advanced_at)
            quiet = max(unserved, self._active_at)
            if now - quiet > self.stall_after_s or now - unserved > self.partition_stall_s:
                reading = self._readings.get(key)
                waiting = reading.lag if reading else "?"
                stalled.append(f"{key[0]}[{key[1]}]: {waiting} waiting, none processed "
                               f"for {now - unserved:.0f} s")  # fmt: skip
        lost = [f"{_where(topic, p)}: {why}" for (topic, p), why in sorted(self._lost.items())]
        found = [
            broker,
            Check("stream", not stalled, "; ".join(stalled)),
        ]
        if self.detect_loss:
            why = "the broker lost records: " + "; ".join(lost)
            found.append(Check("broker-data", not lost, why))
        return found


def _where(topic: str, partition: int) -> str:
    return topic if partition < 0 else f"{topic}[{partition}]"


def probing(probe: LagProbe, health: StreamHealth, interval_s: float) -> LoopBody:
    """The supervised loop that feeds `health` from `probe`."""

    async def run(heartbeat: Heartbeat) -> None:
        while True:
            before = health.processed_offsets()
            try:
                health.probed(await probe.read(), before)
            except BrokerUnavailable as exc:
                # Not a failure of the loop: the broker check turns red once
                # this lasts `broker_timeout_s`.
                health.probe_failed(str(exc))
            heartbeat.beat()
            await asyncio.sleep(interval_s)

    return run
