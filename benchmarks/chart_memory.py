"""Memory and rebuild time of the drift charts and the follow-up book, per procedure.

    .venv/bin/python benchmarks/chart_memory.py [--procedures 100000] [--top 25]

Builds a worker-like engine in-process (no Kafka): the synthetic cohort's
bulk messages are reduced to fact batches (as `stages.py` does, cached under
the system's temp directory by size and seed), applied to an `OutcomeEngine`
wired with a `DriftMonitor` and a `FollowupMonitor` as `engine/bootstrap.py`
wires them, with the charts refreshed every 12 batches as the worker's timer
would. Then it measures what a recovery costs these two monitors:

* time: `drift.rebuild` + `followup.rebuild` over the engine's partitions,
  then the first `refresh` (which moves and folds every case), in CPU
  seconds of the process, best of `--repeat`; site designs come from the
  on-disk cache the live pass warmed (the designer runs in the caller's
  thread here, on a background thread in a worker);
* memory: the same rebuild under `tracemalloc`, the bytes still held by
  what it allocated, grouped by file:line, divided by the procedures held
  (with `--live`, also what the live pass left held: follow-ups still to
  close, ids published).

The outcome records themselves (`domain/outcomes/`) are built before the
measurement starts and are not counted here.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

import msgspec

PARTITIONS = 4
REFRESH_EVERY = 12
MONITOR_FILES = ("/domain/drift/", "/domain/followup/", "/engine/drift_monitor.py",
                 "/engine/followup_monitor.py")  # fmt: skip


def fact_batches(procedures: int, seed: int) -> list[tuple[str, bytes]]:
    cache = Path(tempfile.gettempdir()) / f"spinewatch-chart-memory-{procedures}-{seed}.msgpack"
    if cache.exists():
        return msgspec.msgpack.decode(cache.read_bytes(), type=list[tuple[str, bytes]])
    sys.path.insert(0, str(Path(__file__).parent))
    from pipeline import make_workload  # type: ignore[import-not-found]  # noqa: PLC0415

    from spinewatch.engine.ingest import MessageOrigin, ingest_batch  # noqa: PLC0415

    print(f"preparing {procedures} procedures (cached in {cache})...", file=sys.stderr)
    work = make_workload(procedures, seed, 2000)
    origin = MessageOrigin("events", 0, 0)
    batches = [
        (b[0], b[1])
        for _, message in work.bulk
        for b in ingest_batch([(message, origin)]).fact_batches
    ]
    cache.write_bytes(msgspec.msgpack.encode(batches))
    return batches


def engine_of(data_dir: Path):  # type: ignore[no-untyped-def]
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from spinewatch.engine.bootstrap import outcome_engine  # noqa: PLC0415
    from spinewatch.engine.settings import Settings  # noqa: PLC0415

    return outcome_engine(CollectorRegistry(), Settings(data_dir=data_dir), background=False)


def replay(engine, batches: list[tuple[str, bytes]]) -> float:  # type: ignore[no-untyped-def]
    owned = set(range(PARTITIONS))
    table: dict[str, bytes] = {}
    began = time.perf_counter()
    for offset, (site, raw) in enumerate(batches):
        engine.apply(table, zlib.crc32(site.encode()) % PARTITIONS, offset, raw)
        if offset % REFRESH_EVERY == REFRESH_EVERY - 1:
            engine.refresh_drift(owned)
    engine.refresh_drift(owned)
    return time.perf_counter() - began


def recover(engine) -> tuple[float, float, float, float]:  # type: ignore[no-untyped-def]
    """drift.rebuild, followup.rebuild, then the first refresh of each: CPU seconds."""
    owned = set(range(PARTITIONS))
    drift, followup = engine.drift, engine.followup
    # CPU seconds of this process (threads included): the machine is shared,
    # and wall time there measures the neighbours as much as the rebuild.
    clock = time.process_time
    t0 = clock()
    drift.rebuild(engine.partitions)
    t1 = clock()
    followup.rebuild(engine.partitions)
    t2 = clock()
    followup.refresh(owned)
    t3 = clock()
    drift.refresh(owned)
    t4 = clock()
    drift.take_outbox()
    drift.take_lookbacks()
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3


def measure(procedures: int, seed: int, repeat: int, top: int, *, live: bool) -> dict[str, object]:
    batches = fact_batches(procedures, seed)
    # Site designs are cached on disk by their inputs (engine/site_designs.py):
    # a second run calibrates nothing, as a restarted worker would.
    designs = Path(tempfile.gettempdir()) / "spinewatch-chart-memory-designs"
    designs.mkdir(exist_ok=True)
    engine = engine_of(designs)
    if live:
        # What the monitors hold after the live path (heaps of follow-ups
        # still to close, published ids...), not only after a rebuild.
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
    live_s = replay(engine, batches)
    live_stats = []
    if live:
        gc.collect()
        live_stats = tracemalloc.take_snapshot().compare_to(before, "lineno")
        tracemalloc.stop()
    held = sum(len(state.records) for state in engine.partitions.values())
    cases = sum(
        len(site) for charts in engine.drift.partitions.values() for site in charts.sites.values()
    )
    timings = [recover(engine) for _ in range(repeat)]
    best = min(timings, key=sum)
    # Memory: what a rebuild allocates and keeps, the previous monitors' state dropped first.
    engine.drift.rebuild({})
    engine.followup.rebuild({})
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    recover(engine)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = after.compare_to(before, "lineno")
    engine.drift.designer.close()
    found: dict[str, object] = {
        "procedures": held,
        "drift_cases": cases,
        "live_replay_s": round(live_s, 2),
        "drift_rebuild_s": round(best[0], 3),
        "followup_rebuild_s": round(best[1], 3),
        "followup_first_refresh_s": round(best[2], 3),
        "drift_first_refresh_s": round(best[3], 3),
        "recovery_s_per_100k": round(sum(best) / held * 100_000, 3),
    }
    for name, measured in (("rebuilt", stats), ("live", live_stats)):
        if not measured:
            continue
        ours = [s for s in measured if any(m in s.traceback[0].filename for m in MONITOR_FILES)]
        found[f"bytes_per_procedure_monitors_{name}"] = round(
            sum(s.size_diff for s in ours) / held, 1
        )
        found[f"by_line_{name}"] = [
            (
                f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}",
                round(s.size_diff / held, 1),
            )
            for s in sorted(ours, key=lambda s: -s.size_diff)[:top]
        ]
    return found


def _short(filename: str) -> str:
    return filename.split("/spinewatch/", 1)[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--procedures", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20260)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--live", action="store_true", help="also measure after the live path (slow: tracemalloc)"
    )
    args = parser.parse_args()
    found = measure(args.procedures, args.seed, args.repeat, args.top, live=args.live)
    print(f"{found['procedures']} procedures, {found['drift_cases']} drift-chart cases")
    for name, value in found.items():
        if not name.startswith("by_line"):
            print(f"  {name:<40} {value}")
    for name in ("rebuilt", "live"):
        if f"by_line_{name}" in found:
            print(f"bytes per procedure held after the {name} path, by allocation site:")
            for where, per in found[f"by_line_{name}"]:  # type: ignore[attr-defined]
                print(f"  {per:>8.1f}  {where}")
    print(json.dumps(found), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
