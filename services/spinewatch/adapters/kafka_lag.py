"""How far a consumer group is behind, read from the broker (as Burrow does).

The probe is a client of its own, independent of the consumer it watches:
when faust's consumer or the alerting consumer hangs, the probe still sees
input waiting behind the group's committed offsets, which is what makes a
stuck worker turn red instead of staying green and deaf.

Per partition it reads the group's committed offset (OffsetFetch) and the
end of the log. The end comes from a Fetch response's high watermark, not
from ListOffsets: Tansu answers ListOffsets "latest" with the base offset of
the last record batch plus one (0.6.0, measured: 1 for a partition holding
25 records produced as one batch), while its high watermark is exact. So
each probe seeks every partition to the committed offset and fetches once:
the first record of a lagging partition also gives the age of the oldest
unprocessed event (its Kafka timestamp). The partitions are paused between
probes, so the probe does not keep fetching the log.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from spinewatch.adapters.kafka_clients import stop_client
from spinewatch.adapters.kafka_security import KafkaSecurity
from spinewatch.errors import BrokerUnavailable


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed here
    start: int  # the log's first offset
    end: int  # the high watermark: the offset the next record will get
    oldest_timestamp_ms: int | None  # of the record at the committed offset, if any waits

    @property
    def position(self) -> int:
        """The next offset the group will process."""
        return self.start if self.committed is None else max(self.committed, self.start)

    @property
    def lag(self) -> int:
        return max(0, self.end - self.position)

    @property
    def lost(self) -> bool:
        """Committed beyond the end of the log: the broker lost records it had."""
        return self.committed is not None and self.committed > self.end


@dataclass(frozen=True, slots=True)
class LagReading:
    partitions: list[PartitionLag]
    missing_topics: tuple[str, ...]  # probed topics the broker does not know (any more)


class LagProbe:
    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topics: Iterable[str],
        *,
        request_timeout_s: float = 5.0,
        fetch_wait_s: float = 2.0,
        security: KafkaSecurity | None = None,
    ) -> None:
        self.group_id = group_id
        self.topics = tuple(topics)
        self.fetch_wait_s = fetch_wait_s
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            # The probe never joins the group: it only reads the group's offsets.
            auto_offset_reset="earliest",
            request_timeout_ms=int(request_timeout_s * 1000),
            # One record per partition is all a probe reads.
            max_partition_fetch_bytes=64 << 10,
            fetch_max_wait_ms=100,
            **(security or KafkaSecurity()).aiokafka_kwargs(),
        )
        self._started = False
        self._assigned: frozenset[TopicPartition] = frozenset()
        self._positions: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        self._started = True  # a start cut short has opened connections too
        await self._consumer.start()

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await stop_client(self._consumer)

    async def read(self) -> LagReading:
        """One reading of every partition of the probed topics.

        Raises `BrokerUnavailable` when the broker does not answer in time.
        """
        try:
            return await self._read()
        except (OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"lag probe: {type(exc).__name__}") from None
        except Exception as exc:
            # aiokafka raises its own KafkaError tree for an unreachable or
            # restarting broker; all of it means the same here.
            if type(exc).__module__.startswith("aiokafka"):
                raise BrokerUnavailable(f"lag probe: {type(exc).__name__}") from None
            raise

    async def _read(self) -> LagReading:
        consumer = self._consumer
        # A fresh view of the cluster each time (raises when no broker
        # answers); the consumer's own view only follows subscriptions.
        cluster = await consumer._client.fetch_all_metadata()
        tps = sorted(
            TopicPartition(topic, p)
            for topic in self.topics
            for p in cluster.partitions_for_topic(topic) or ()
        )
        missing = tuple(t for t in self.topics if not cluster.partitions_for_topic(t))
        if frozenset(tps) != self._assigned:
            consumer.assign(tps)
            self._assigned = frozenset(tps)
        starts = await consumer.beginning_offsets(tps)
        committed = {tp: await consumer.committed(tp) for tp in tps}
        asked_at = int(time.time() * 1000)
        self._positions = {tp: max(committed[tp] or 0, starts[tp]) for tp in tps}
        for tp, position in self._positions.items():
            consumer.seek(tp, position)
        consumer.resume(*tps)
        first = await self._first_records(tps, asked_at)
        consumer.pause(*tps)
        readings = [
            PartitionLag(
                tp.topic,
                tp.partition,
                committed[tp],
                starts[tp],
                consumer.highwater(tp) or 0,
                first.get(tp),
            )
            for tp in tps
        ]
        return LagReading(readings, missing)

    async def _first_records(
        self, tps: list[TopicPartition], asked_at_ms: int
    ) -> dict[TopicPartition, int]:
        """Fetch until every partition answered once; the first record's timestamp of each."""
        consumer = self._consumer
        first: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + self.fetch_wait_s
        while True:
            waiting = [tp for tp in tps if tp not in first]
            batches = await consumer.getmany(*waiting, timeout_ms=100, max_records=1)
            for tp, records in batches.items():
                if records:
                    first[tp] = records[0].timestamp
                    consumer.pause(tp)  # one record is enough
            if all(self._answered(tp, asked_at_ms, first) for tp in tps):
                return first
            if time.monotonic() > deadline:
                raise TimeoutError("no fetch answer for every partition")

    def _answered(
        self, tp: TopicPartition, asked_at_ms: int, first: dict[TopicPartition, int]
    ) -> bool:
        consumer = self._consumer
        if (consumer.last_poll_timestamp(tp) or 0) < asked_at_ms:
            return False  # no fetch response since the seek
        # A partition with records waiting has answered once its first arrived.
        return tp in first or (consumer.highwater(tp) or 0) <= self._positions[tp]
