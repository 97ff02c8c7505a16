"""Restart-to-ready of the outcome state from a local RocksDB table.

    .venv/bin/python benchmarks/state_restart.py [--procedures 100000] [--tail 0.05]

Writes the changelog segments of the synthetic cohort (state_memory.py's
cached fact batches) into a RocksDB table the way the worker's apply agent
does (through `OutcomeEngine.apply`, four partitions), with a snapshot of the
state taken before the last `--tail` share of the batches. Then, each in a
fresh process, as a restarted worker would:

* `recover` from the snapshot and the segments after it;
* `recover` with no snapshot (a full rebuild: every segment read and decoded).

Each reports the wall time of `recover` and of its parts. The engine has no
drift charts and no follow-up schedule: their rebuild is theirs to measure
(benchmarks/drift.py). Kafka is not involved: faust's own recovery of the
table (the changelog tail into RocksDB) comes on top.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

PARTITIONS = 4


class RocksTable(Mapping[bytes, bytes]):
    """A RocksDB table as faust's store hands it over: raw bytes keys and values."""

    def __init__(self, path: Path) -> None:
        from rocksdict import Options, Rdict  # noqa: PLC0415

        self.db = Rdict(str(path), Options(raw_mode=True))

    def __setitem__(self, key: str, value: bytes) -> None:
        self.db[key.encode()] = value

    def __getitem__(self, key: bytes) -> bytes:
        return self.db[key]  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.db.keys())

    def __len__(self) -> int:
        return sum(1 for _ in iter(self))


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _engine(snapshots: Path) -> object:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from spinewatch.adapters.state_snapshot import SnapshotStore  # noqa: PLC0415
    from spinewatch.engine.outcomes import OutcomeEngine  # noqa: PLC0415

    return OutcomeEngine(CollectorRegistry(), snapshots=SnapshotStore(snapshots))


def replicated(batches: list[tuple[str, bytes]], procedures: int) -> list[tuple[str, bytes]]:
    """Past 100,000 procedures, copies of the 100k cohort under other ids.

    Generating and validating a million-procedure cohort takes most of an
    hour; the state's size and recovery depend on the shape of each record,
    which copies keep (copy n: every procedure and event id with its
    second-to-last byte XOR n, so ids stay distinct).
    """
    from msgspec import structs  # noqa: PLC0415

    from spinewatch.adapters.state_codec import decode_facts, encode_facts  # noqa: PLC0415
    from spinewatch.domain.outcomes.facts import RetractionFact  # noqa: PLC0415

    copies = -(-procedures // 100_000)
    if copies <= 1:
        return batches

    def moved(raw: bytes, n: int) -> bytes:
        def id_(old: bytes) -> bytes:
            return old[:-2] + bytes((old[-2] ^ n,)) + old[-1:]

        items = []
        for pid, original in decode_facts(raw):
            fact = structs.replace(original, event_id=id_(original.event_id))
            if type(fact) is RetractionFact:
                fact = structs.replace(fact, target_event_id=id_(fact.target_event_id))
            items.append((id_(pid), fact))
        return encode_facts(items)

    return [(site, moved(raw, n)) for n in range(copies) for site, raw in batches]


def write(work: Path, procedures: int, seed: int, tail: float) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).parent))
    from state_memory import fact_batches  # type: ignore[import-not-found]  # noqa: PLC0415

    batches = replicated(fact_batches(min(procedures, 100_000), seed), procedures)
    engine = _engine(work / "snapshots")
    table = RocksTable(work / "table")
    rss_before = rss_bytes()
    cut = int(len(batches) * (1 - tail))
    began = time.monotonic()
    for offset, (site, raw) in enumerate(batches):
        if offset == cut:
            saving = time.monotonic()
            engine.save_snapshots()  # type: ignore[attr-defined]
            saved = time.monotonic() - saving
        partition = zlib.crc32(site.encode()) % PARTITIONS
        engine.apply(table, partition, offset, raw)  # type: ignore[attr-defined]
    held = sum(len(s.records) for s in engine.partitions.values())  # type: ignore[attr-defined]
    snapshot_bytes = sum(f.stat().st_size for f in (work / "snapshots").iterdir())
    return {
        "procedures": held,
        "segments": len(batches),
        "tail_segments": len(batches) - cut,
        "write_s": time.monotonic() - began,
        "snapshot_write_s": saved,
        "snapshot_bytes_per_procedure": snapshot_bytes / held,
        # Grown by applying every batch (with the batches' own churn freed).
        "rss_growth_per_procedure": (rss_bytes() - rss_before) / held,
    }


def recover(work: Path, use_snapshot: bool) -> dict[str, float]:
    if not use_snapshot:
        shutil.rmtree(work / "snapshots", ignore_errors=True)
    began = time.monotonic()
    engine = _engine(work / "snapshots")
    table = RocksTable(work / "table")
    opened = time.monotonic()
    rss_before = rss_bytes()
    cpu = time.process_time()
    engine.recover(table, set(range(PARTITIONS)))  # type: ignore[attr-defined]
    done = time.monotonic()
    cpu = time.process_time() - cpu
    rss_grown = rss_bytes() - rss_before
    drift_cpu = time.process_time()
    held = sum(len(s.records) for s in engine.partitions.values())  # type: ignore[attr-defined]
    # `recover` ends with the drift monitor's rebuild (sentinel withdrawals
    # recalled from every record, every case noted): timed again on its own,
    # so that the state's share is the difference.
    engine.drift.rebuild(engine.partitions)  # type: ignore[attr-defined]
    drift = time.monotonic() - done
    drift_cpu = time.process_time() - drift_cpu
    return {
        "rss_growth_per_procedure": rss_grown / max(held, 1),
        "state_cpu_s": cpu - drift_cpu,
        "drift_rebuild_cpu_s": drift_cpu,
        "procedures": held,
        "open_s": opened - began,
        "recover_s": done - opened,
        "of_which_drift_rebuild_s": drift,
        "state_s": done - opened - drift,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--procedures", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20260)
    parser.add_argument("--tail", type=float, default=0.05)
    parser.add_argument("--skip-full", action="store_true", help="no full rebuild (slow at 1M)")
    parser.add_argument("--child", choices=("write", "snapshot", "full"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "write":
        print(json.dumps(write(args.work, args.procedures, args.seed, args.tail)))
        return 0
    if args.child:
        print(json.dumps(recover(args.work, args.child == "snapshot")))
        return 0
    with tempfile.TemporaryDirectory(prefix="spinewatch-restart-") as tmp:
        results = {}
        for child in ("write", "snapshot") if args.skip_full else ("write", "snapshot", "full"):
            command = [sys.executable, __file__, "--child", child, "--work", tmp]
            command += ["--procedures", str(args.procedures), "--seed", str(args.seed)]
            command += ["--tail", str(args.tail)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # noqa: S603
            results[child] = json.loads(out.strip().splitlines()[-1])
            print(child, results[child], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
