"""Where did an event go? Reads a worker's topics back from the broker.

Only for diagnosing a failed exactness test: for the events a worker should
hold, it reports whether each reached the facts topic (and whether that
facts record lay below the group's committed offset) and whether a
changelog segment holds it. That tells a lost hop from a lost rebuild.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from spinewatch.adapters.kafka_clients import started
from spinewatch.adapters.state_codec import decode_facts
from spinewatch.engine.settings import Settings
from tests.support import scaled

Location = tuple[int, int]  # (partition, offset)


async def _read_all(bootstrap: str, topic: str) -> list[tuple[int, int, bytes]]:
    unstarted = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    # `started` also stops the consumer when its stop() raises CancelledError,
    # which aiokafka's can: it cancels and then awaits a coordinator task of
    # its own that may not have started yet.
    async with started(unstarted) as consumer:
        tps = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
        next_offset = dict.fromkeys(ends, 0)
        records: list[tuple[int, int, bytes]] = []
        deadline = time.monotonic() + scaled(30)
        while any(next_offset[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for part in (await consumer.getmany(timeout_ms=200)).values():
                records.extend((r.partition, r.offset, r.value or b"") for r in part)
                next_offset[part[-1].partition] = part[-1].offset + 1
        return records


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    # Asks the group coordinator without joining the group (no subscription).
    unstarted = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    async with started(unstarted) as consumer:
        partitions = sorted(
            consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
        )
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer.topics()  # fetches the cluster's metadata
    return consumer.partitions_for_topic(topic) or set()


def _event_ids(records: Iterable[tuple[int, int, bytes]]) -> dict[bytes, list[Location]]:
    found: dict[bytes, list[Location]] = {}
    for partition, offset, raw in records:
        for _, fact in decode_facts(raw):
            found.setdefault(fact.event_id, []).append((partition, offset))
    return found


def _inbound_ids(records: Iterable[tuple[int, int, bytes]]) -> dict[bytes, list[Location]]:
    """Where each event id sits in the inbound events topic (malformed values skipped)."""
    found: dict[bytes, list[Location]] = {}
    for partition, offset, raw in records:
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and isinstance(item.get("event_id"), str):
                with contextlib.suppress(ValueError):
                    event_id = uuid.UUID(item["event_id"]).bytes
                    found.setdefault(event_id, []).append((partition, offset))
    return found


async def audit(bootstrap: str, settings: Settings, event_ids: Iterable[bytes]) -> str:
    inbound = _inbound_ids(await _read_all(bootstrap, settings.events_topic))
    facts = _event_ids(await _read_all(bootstrap, settings.facts_topic))
    segments = _event_ids(await _read_all(bootstrap, settings.changelog_topic))
    committed_facts = await _committed(bootstrap, settings.app_id, settings.facts_topic)
    committed_events = await _committed(bootstrap, settings.app_id, settings.events_topic)
    wanted = set(event_ids)
    lines = [
        f"events topic committed: {committed_events}",
        f"facts topic committed: {committed_facts}",
        f"distinct events: {len(wanted)}; in facts topic {len(wanted & facts.keys())}; "
        f"in changelog {len(wanted & segments.keys())}",
    ]
    for event_id in sorted(wanted - segments.keys())[:20]:
        where = [
            f"p{p}@{o} ({'below' if o < (committed_facts.get(p) or 0) else 'at/above'} commit)"
            for p, o in facts.get(event_id, [])
        ]
        sources = [
            f"p{p}@{o} ({'below' if o < (committed_events.get(p) or 0) else 'at/above'} commit)"
            for p, o in inbound.get(event_id, [])
        ]
        lines.append(
            f"not in changelog: {event_id.hex()} events records: {sources or 'none'};"
            f" facts records: {where or 'none'}"
        )
    return "\n".join(lines)
