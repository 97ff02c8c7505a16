"""The registry benchmark's workload: a seeded cohort over many sites, generated in chunks.

A national registry has hundreds of sites. Each site's events come from the
demo generator (`site_events`, the same seeded, literature-calibrated
streams as `pipeline.py`'s cohort), one site at a time in a pool of
processes, so that 1,000,000 procedures (~3.8 million events) never sit in
memory at once: each site's events become bulk JSON arrays keyed by its
site_id (the replay path) and are appended to a file in the run's temporary
directory, from which they are produced later at the broker's pace. The
first `reference_events` events are also kept as single-event messages
(keyed by procedure_id) for the raw aiokafka and Quix Streams references.
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import zip_longest
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from pipeline import Message, _array

from spinewatch.demo.synthetic.cohort import DEFAULT_START, SiteProfile, default_sites, encode
from spinewatch.demo.synthetic.events import random_uuid, seeded_stream, site_events
from spinewatch.domain.drift.events import sentinel_id

_LENGTH = struct.Struct(">I")
IN_FLIGHT = 4  # sites generated ahead of the writer: bounds the generator's memory


@dataclass
class RegistryWorkload:
    procedures: int
    events: int
    sites: int
    bulk_path: Path  # length-prefixed (key, value) bulk messages
    bulk_messages: int
    singles: list[Message] = field(default_factory=list)  # the first reference events
    generate_s: float = 0.0
    sites_done: int = 0


def registry_sites(procedures: int, sites: int) -> list[SiteProfile]:
    """`sites` sites with the five default case mixes in turn, volumes summing to `procedures`."""
    mixes = [site.case_mix for site in default_sites(5)]
    share, remainder = divmod(procedures, sites)
    return [
        SiteProfile(
            site_id=f"site-{index:03d}",
            procedures=share + (1 if index < remainder else 0),
            case_mix=mixes[index % len(mixes)],
            operators=2 + index % 3,
        )
        for index in range(sites)
    ]


def _site_messages(seed: int, site: SiteProfile, bulk_size: int) -> tuple[int, list[bytes]]:
    """In a pool process: (procedures, encoded events) of one site, in generation order."""
    events = site_events(seed, site, DEFAULT_START.astimezone(UTC))
    procedures = sum(1 for e in events if e["event_type"] == "procedure.performed")
    return procedures, [encode(e) for e in events]


def _write(out: Any, key: bytes, value: bytes) -> None:
    out.write(_LENGTH.pack(len(key)) + key + _LENGTH.pack(len(value)) + value)


def read_messages(path: Path) -> Iterator[Message]:
    with path.open("rb") as source:
        while header := source.read(4):
            key = source.read(_LENGTH.unpack(header)[0])
            (size,) = _LENGTH.unpack(source.read(4))
            yield key, source.read(size)


async def generate(
    *,
    procedures: int,
    sites: int,
    seed: int,
    bulk_size: int,
    reference_events: int,
    into: Path,
    log: Callable[[str], None],
) -> RegistryWorkload:
    began = time.perf_counter()
    profiles = registry_sites(procedures, sites)
    work = RegistryWorkload(0, 0, sites, into, 0)
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=2) as pool, into.open("wb") as out:
        pending: list[Future[tuple[int, list[bytes]]]] = []
        for site in profiles:
            pending.append(pool.submit(_site_messages, seed, site, bulk_size))
            if len(pending) < IN_FLIGHT:
                continue
            await _drain_one(
                loop,
                pending,
                profiles,
                work,
                out=out,
                bulk_size=bulk_size,
                reference_events=reference_events,
            )
            if sites >= 10 and work.sites_done % (sites // 10) == 0:
                log(f"  generated {work.sites_done}/{sites} sites, {work.events} events")
        while pending:
            await _drain_one(
                loop,
                pending,
                profiles,
                work,
                out=out,
                bulk_size=bulk_size,
                reference_events=reference_events,
            )
    if work.procedures != procedures:
        raise RuntimeError(f"generated {work.procedures} procedures, not {procedures}")
    work.generate_s = time.perf_counter() - began
    return work


async def _drain_one(
    loop: asyncio.AbstractEventLoop,
    pending: list[Future[tuple[int, list[bytes]]]],
    profiles: list[SiteProfile],
    work: RegistryWorkload,
    *,
    out: Any,
    bulk_size: int,
    reference_events: int,
) -> None:
    count, events = await asyncio.wrap_future(pending.pop(0), loop=loop)
    site = profiles[work.sites_done]
    key = site.site_id.encode()
    for start in range(0, len(events), bulk_size):
        _write(out, key, _array(events[start : start + bulk_size]))
        work.bulk_messages += 1
    room = reference_events - len(work.singles)
    if room > 0:
        # Keyed by procedure, as pipeline.py's single-event messages.
        work.singles += [(_procedure_key(raw), raw) for raw in events[:room]]
    work.procedures += count
    work.events += len(events)
    work.sites_done += 1


def _procedure_key(raw: bytes) -> bytes:
    marker = raw.index(b'"procedure_id":"') + 16
    return raw[marker : marker + 36]


async def produce_stream(
    bootstrap: str, topic: str, messages: Iterator[Message] | AsyncIterator[Message]
) -> float:
    """Send every message with a batching producer, acknowledged in windows of 256."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=1 << 20,
        max_request_size=32 << 20,
        acks=1,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        window: list[asyncio.Future[Any]] = []
        for key, value in messages:  # type: ignore[union-attr]
            window.append(await producer.send(topic, value=value, key=key))
            if len(window) >= 256:
                await asyncio.gather(*window)
                window.clear()
        await asyncio.gather(*window)
        return time.perf_counter() - started
    finally:
        await producer.stop()


# --- the live phase's events ------------------------------------------------------


class LiveEvents:
    """New procedures at the registry's sites, and sentinel pairs at new sites.

    The steady stream is fresh procedures (site profiles with another seed,
    so every id is new) spread over the registry's sites. A sentinel is a
    new procedure and, later, its procedure-related pulmonary cement
    embolism: the complication that pages at its first case
    (domain/drift/sentinels.py), each a new alert.
    """

    def __init__(self, seed: int, sites: int, run_id: str, needed: int) -> None:
        # ~3.8 events per procedure: a third of `needed` procedures is enough,
        # spread over every site and sent in turn, one site after another.
        per_site = [
            [encode(e) for e in site_events(seed, site, DEFAULT_START.astimezone(UTC))]
            for site in registry_sites(max(sites, needed // 3 + 1), sites)
        ]
        interleaved = [raw for row in zip_longest(*per_site) for raw in row if raw is not None]
        if len(interleaved) < needed:
            raise RuntimeError(f"live: {len(interleaved)} events generated, {needed} needed")
        self._events = iter(interleaved)
        self._rng = seeded_stream(seed, f"sentinels:{run_id}")
        self.sites = sites

    def next(self) -> Message:
        raw = next(self._events)
        return raw[raw.index(b'"site_id":"') + 11 :].split(b'"', 1)[0], raw

    def sentinel(self, number: int) -> tuple[str, Message, Message]:
        """(sentinel id, procedure message, embolism message) of sentinel `number`.

        At the registry's sites in turn (no new site, so no new chart to
        design mid-phase); the alert is recognised by its `sentinel_id`
        label, a hash of site, category and procedure (no id in clear).
        """
        site = f"site-{number % self.sites:03d}"
        when = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
        procedure_id = uuid.UUID(random_uuid(self._rng))
        common = {
            "schema_version": 1,
            "site_id": site,
            "patient_ref": str(random_uuid(self._rng)),
            "procedure_id": str(procedure_id),
        }
        procedure = common | {
            "event_id": str(random_uuid(self._rng)),
            "event_type": "procedure.performed",
            "occurred_at": when.isoformat(),
            "recorded_at": (when + timedelta(hours=1)).isoformat(),
            "source": f"ris-{site}",
            "procedure_type": "pvp",
            "indication": "osteoporotic",
            "levels": [
                {
                    "vertebra": "L1",
                    "approach": "bipedicular",
                    "cement_volume_ml": 4.0,
                    "leakage_imaging": "ct",
                    "leakages": [],
                }
            ],
            "anesthesia": "local",
            "pre_vas": 8.0,
            "neurological_deficit_at_presentation": False,
            "biopsy_taken": False,
        }
        embolism = common | {
            "event_id": str(random_uuid(self._rng)),
            "event_type": "complication.reported",
            "occurred_at": when.isoformat(),
            "recorded_at": (when + timedelta(hours=2)).isoformat(),
            "source": f"ehr-{site}",
            "category": "pulmonary_cement_embolism",
            "severity": "severe",
            "relatedness": "definite",
            "days_after_procedure": 0,
        }
        key = site.encode()
        alert = str(sentinel_id(site, "pulmonary_cement_embolism", procedure_id.bytes, 0))
        return alert, (key, encode(procedure)), (key, encode(embolism))
