"""Where the report's state comes from: a replayed file, or a running system's topics.

Both feed the worker's own code into an engine held in this process:

* **a file** (`from_files`): the records `spinewatch replay` reads (JSON
  Lines, JSON, CSV: `replay/sources.py`), triaged and reduced to facts by
  `engine.ingest.ingest_batch`, the worker's ingest, then applied as fact
  batches the way the apply agent applies them;
* **a running system** (`from_topics`): the deployment's facts topic from
  its first offset to the end it had when the report started, every batch
  verified with the deployment's keyring before it is applied (a batch
  that fails is counted, never applied, as the worker dead-letters it);
  and the `{app}-alerts` audit topic for the alert history.

Consumers are assigned partitions (no consumer group, no committed
offsets) and never write: the report cannot move the worker's offsets or
state, and needs no new inbound path on the worker.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from spinewatch.adapters.message_signing import Keyring, TopicKind
from spinewatch.engine.bootstrap import outcome_engine
from spinewatch.engine.ingest import MessageOrigin, ingest_batch
from spinewatch.engine.outcomes import OutcomeEngine
from spinewatch.engine.settings import Settings
from spinewatch.errors import ReplayError, SpinewatchError
from spinewatch.replay.sources import Format, detect_format, read_records

CHUNK_RECORDS = 2000
REPLAYED_PARTITION = 0  # one partition holds every site of a replayed file
POLL_MS = 200


class ReportSourceError(SpinewatchError):
    """The report's input cannot be read (a file, or the topics); the message says why."""


class _Discarded(MutableMapping[str, bytes]):
    """The segments table of an engine nobody restores: writes go nowhere."""

    def __setitem__(self, key: str, value: bytes) -> None:
        pass

    def __getitem__(self, key: str) -> bytes:
        raise KeyError(key)

    def __delitem__(self, key: str) -> None:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass
class Loaded:
    """An engine fed from a source, and what was read."""

    engine: OutcomeEngine
    description: str
    audit: list[dict[str, Any]] = field(default_factory=list)
    applied_batches: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def report_engine(settings: Settings) -> OutcomeEngine:
    """The worker's engine, site designs calibrated in this thread."""
    return outcome_engine(CollectorRegistry(), settings, background=False)


def from_files(paths: Sequence[Path], settings: Settings) -> Loaded:
    started = time.monotonic()
    engine = report_engine(settings)
    loaded = Loaded(engine, "")
    table, offset = _Discarded(), 0
    events = 0
    for path in paths:
        if not path.is_file():
            raise ReportSourceError(f"{path}: no such file")
        try:
            fmt = detect_format(path)
        except ReplayError as exc:
            raise ReportSourceError(str(exc)) from None
        if fmt is Format.FHIR:
            raise ReportSourceError(
                f"{path}: a FHIR bundle is mapped with the site's pseudonym key: replay it "
                "(`spinewatch replay`) and report from the running system"
            )
        chunk: list[tuple[bytes, MessageOrigin]] = []
        try:
            for record in read_records(path, fmt):
                if record.payload is None:  # a CSV row that is not an event
                    loaded.rejected["unreadable_record"] = (
                        loaded.rejected.get("unreadable_record", 0) + 1
                    )
                    continue
                chunk.append((record.payload, MessageOrigin(path.name, 0, record.index)))
                if len(chunk) >= CHUNK_RECORDS:
                    offset, n = _ingest(
                        engine, table, chunk, offset, settings=settings, loaded=loaded
                    )
                    events += n
                    chunk = []
        except ReplayError as exc:
            raise ReportSourceError(str(exc)) from None
        if chunk:
            offset, n = _ingest(engine, table, chunk, offset, settings=settings, loaded=loaded)
            events += n
    names = ", ".join(p.name for p in paths)
    rejected = sum(loaded.rejected.values())
    loaded.description = (
        f"replayed file{'s' if len(paths) > 1 else ''} {names}: {events} events accepted, "
        f"{rejected} rejected"
    )
    loaded.seconds = time.monotonic() - started
    return loaded


def _ingest(
    engine: OutcomeEngine,
    table: _Discarded,
    chunk: list[tuple[bytes, MessageOrigin]],
    offset: int,
    *,
    settings: Settings,
    loaded: Loaded,
) -> tuple[int, int]:
    result = ingest_batch(chunk, settings.ingest_limits)
    for reason, count in result.rejected_by_reason.items():
        loaded.rejected[reason] = loaded.rejected.get(reason, 0) + count
    for _site_id, batch in result.fact_batches:
        engine.apply(table, REPLAYED_PARTITION, offset, batch)
        offset += 1
        loaded.applied_batches += 1
    return offset, sum(result.accepted_by_type.values())


async def from_topics(settings: Settings, brokers: str, timeout_s: float = 300.0) -> Loaded:
    """The facts topic into an engine, and the audit records, as of now."""
    if settings.signing_key is None:
        raise ReportSourceError(
            "the facts topic is signed: set SPINEWATCH_SIGNING_KEY (and "
            "SPINEWATCH_SIGNING_PREVIOUS_KEYS) as the worker has them"
        )
    keyring = Keyring.from_secrets(settings.signing_key, settings.signing_previous_keys)
    started = time.monotonic()
    engine = report_engine(settings)
    loaded = Loaded(engine, "")
    table = _Discarded()
    facts = 0

    def apply(record: Any) -> None:
        nonlocal facts
        value = record.value or b""
        fault = keyring.verify(TopicKind.FACTS, record.key, value, record.headers)
        if fault is not None:
            loaded.rejected[fault.value] = loaded.rejected.get(fault.value, 0) + 1
            return
        engine.apply(table, record.partition, record.offset, value)
        loaded.applied_batches += 1

    def audit(record: Any) -> None:
        try:
            decoded = json.loads(record.value or b"")
        except ValueError:
            loaded.rejected["unreadable_audit"] = loaded.rejected.get("unreadable_audit", 0) + 1
            return
        if isinstance(decoded, dict):
            loaded.audit.append(decoded)

    deadline = time.monotonic() + timeout_s
    facts = await _read_topic(brokers, settings, settings.facts_topic, apply, deadline)
    audited = await _read_topic(brokers, settings, settings.topics.alerts, audit, deadline)
    loaded.seconds = time.monotonic() - started
    loaded.description = (
        f"running system (app {settings.app_id}): {facts} fact batches read from "
        f"{settings.facts_topic} in {loaded.seconds:.1f} s, {audited} audit records"
    )
    return loaded


async def _read_topic(
    brokers: str, settings: Settings, topic: str, handle: Any, deadline: float
) -> int:
    """Every record of `topic` up to the end offsets it has now; returns how many."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=brokers,
        enable_auto_commit=False,
        group_id=None,
        **settings.kafka_security.aiokafka_kwargs(),
    )
    try:
        await consumer.start()
    except Exception as exc:
        raise ReportSourceError(
            f"cannot reach the brokers ({type(exc).__name__}); check SPINEWATCH_KAFKA_*"
        ) from None
    try:
        found = consumer.partitions_for_topic(topic)
        if found is None:
            await consumer.force_metadata_update()
            found = consumer.partitions_for_topic(topic)
        if not found:
            return 0  # no such topic yet: nothing was ever written
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        count = 0
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            if time.monotonic() > deadline:
                raise ReportSourceError(f"{topic}: not read to its end in time")
            batch = await consumer.getmany(timeout_ms=POLL_MS)
            for records in batch.values():
                for record in records:
                    if record.offset < ends[TopicPartition(record.topic, record.partition)]:
                        handle(record)
                        count += 1
            await asyncio.sleep(0)
        return count
    finally:
        await consumer.stop()
