"""Snapshots of a partition's outcome state on local disk: a cache of the rebuild.

A snapshot holds a partition's packed records and totals together with the
changelog segments they were built from (their count, a digest of their
keys, and the last key). At recovery it is used only when the segments the
table holds up to that key are exactly those: then the state equals what a
full rebuild of them gives, and only the segments after it are applied.
Anything else (no file, another format or algorithm, unreadable bytes, a
table that lost or gained segments it covers) is refused with a reason, and
the caller rebuilds from every segment.

The algorithm is identified by a digest of the source of the modules that
define the state, so a release that changes how a record contributes never
reads a snapshot of the previous one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from spinewatch.domain.outcomes import aggregates, contribution, facts, packed, partition, records
from spinewatch.domain.outcomes.contribution import AggregateKey, Tally
from spinewatch.domain.outcomes.packed import Profile

FORMAT = 1
_STATE_MODULES = (aggregates, contribution, facts, packed, partition, records)


def _algorithm() -> str:
    digest = hashlib.sha256()
    for module in _STATE_MODULES:
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()


ALGORITHM = _algorithm()


def keys_digest(keys: Iterable[str]) -> str:
    """Order-free digest of segment keys (zero-padded: sorting is numeric)."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


class _Snapshot(msgspec.Struct, array_like=True):
    format: int
    algorithm: str
    partition: int
    segments: int
    digest: str
    last_key: str
    profiles: list[Profile]
    records: dict[bytes, bytes]
    # (site, procedure type, indication, operator, tally) per aggregate
    totals: list[tuple[str, str, str, str | None, Tally]]
    unknown: list[bytes]  # records with no contribution


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Snapshot)


@dataclass(frozen=True, slots=True)
class Loaded:
    state: partition.PartitionState
    tail: list[str]  # segment keys after the snapshot, to apply


class Refused(Exception):
    """Why a snapshot cannot stand for the rebuild (a label: missing, stale, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class SnapshotStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, partition_number: int) -> Path:
        return self.directory / f"outcomes-{partition_number:05d}.snapshot"

    def save(
        self, partition_number: int, state: partition.PartitionState, covered: Iterable[str]
    ) -> int:
        """Write atomically (a crash leaves the previous snapshot); returns bytes written."""
        keys = list(covered)
        if state.dirty:
            raise ValueError("settle the state before its snapshot: totals lag its records")
        snapshot = _Snapshot(
            FORMAT,
            ALGORITHM,
            partition_number,
            len(keys),
            keys_digest(keys),
            max(keys, default=""),
            packed.PROFILES.by_number,
            state.packed,
            [
                (cohort.site_id, cohort.procedure_type.value, cohort.indication.value, op, tally)
                for (cohort, op), tally in state.totals.items()
            ],
            list(state.unknown),
        )
        raw = _encoder.encode(snapshot)
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(partition_number)
        temporary = target.with_suffix(".tmp")
        with temporary.open("wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(target)
        return len(raw)

    def load(self, partition_number: int, table_keys: Iterable[str]) -> Loaded:
        """The state the snapshot holds, and the segments to apply after it; or Refused."""
        try:
            raw = self.path(partition_number).read_bytes()
        except FileNotFoundError:
            raise Refused("missing", "no snapshot") from None
        except OSError as exc:
            raise Refused("unreadable", type(exc).__name__) from None
        try:
            snapshot = _decoder.decode(raw)
        except msgspec.DecodeError:
            raise Refused("unreadable", "not a snapshot this release can read") from None
        if snapshot.format != FORMAT or snapshot.algorithm != ALGORITHM:
            raise Refused("other_version", "written by another release")
        if snapshot.partition != partition_number:
            raise Refused("stale", "written for another partition")
        covered: list[str] = []
        tail: list[str] = []
        for key in table_keys:
            (covered if key <= snapshot.last_key else tail).append(key)
        if len(covered) != snapshot.segments or keys_digest(covered) != snapshot.digest:
            raise Refused("stale", "the table's segments differ from those it covers")
        state = partition.state_of(
            _records_here(snapshot.profiles, snapshot.records),
            _totals(snapshot.totals),
            set(snapshot.unknown),
        )
        return Loaded(state, sorted(tail))


def _records_here(profiles: list[Profile], stored: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The records with their profile numbers made this process's."""
    numbers = packed.PROFILES.remap(profiles)
    if numbers == list(range(len(numbers))):
        return stored  # the usual case: a fresh process numbers them alike
    return {pid: packed.renumbered(record, numbers) for pid, record in stored.items()}


def _totals(
    stored: list[tuple[str, str, str, str | None, Tally]],
) -> dict[AggregateKey, Tally]:
    return {
        contribution.aggregate_key(site, kind, indication, operator): tally
        for site, kind, indication, operator, tally in stored
    }
