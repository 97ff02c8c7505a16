"""Memory per procedure of the outcome state, and the time of a full rebuild.

    .venv/bin/python benchmarks/state_memory.py [--procedures 100000 200000]

Builds the per-partition outcome state (records, totals, and whatever the
partition keeps to move them) from the synthetic cohort's fact batches, as
the worker's apply agent does, without Kafka and without the drift charts
(they have their own share). For each size it reports, per procedure held:

* the resident set growth (RSS, from /proc) and the bytes tracemalloc sees
  allocated, grouped by the source line that allocated them (top lines);
* a walk of the state by structure (records, contribution cache, totals);
* the CPU time of `partition.rebuilt` from the same segments, per 100k.

The fact batches are prepared once per size and seed and cached in the
system temporary directory: preparing them (generation and validation) is
not what is measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

PARTITIONS = 4
Batches = list[tuple[str, bytes]]  # (site, encoded fact batch)


def fact_batches(procedures: int, seed: int) -> Batches:
    cached = Path(tempfile.gettempdir()) / f"spinewatch-state-{procedures}-{seed}.msgpack"
    if cached.exists():
        return msgspec.msgpack.decode(cached.read_bytes(), type=Batches)
    sys.path.insert(0, str(Path(__file__).parent))
    from pipeline import make_workload  # type: ignore[import-not-found]  # noqa: PLC0415

    from spinewatch.engine.ingest import MessageOrigin, ingest_batch  # noqa: PLC0415

    work = make_workload(procedures, seed, 2000)
    origin = MessageOrigin("events", 0, 0)
    batches = [b for _, m in work.bulk for b in ingest_batch([(m, origin)]).fact_batches]
    cached.write_bytes(msgspec.msgpack.encode(batches))
    return batches


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def deep_size(root: object, seen: set[int]) -> int:
    """Bytes of `root` and everything it references that was not counted yet."""
    total = 0
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen or item is None or isinstance(item, (bool, type)):
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (tuple, list, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, msgspec.Struct):
            stack.extend(getattr(item, f) for f in item.__struct_fields__)
        elif hasattr(item, "__slots__"):
            for cls in type(item).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if not name.startswith("__"):
                        stack.append(getattr(item, name, None))
    return total


def by_structure(states: dict[int, object]) -> dict[str, int]:
    # Interned constants (tally names, enum values) are shared by every
    # procedure: count them once, against nothing, by visiting them first.
    from spinewatch.domain.outcomes import contribution  # noqa: PLC0415

    seen: set[int] = set()
    deep_size(vars(contribution), seen)
    sizes: dict[str, int] = {}
    for name in ("records", "contributions", "totals", "dirty", "unknown"):
        sizes[name] = sum(deep_size(getattr(s, name, None), seen) for s in states.values())
    try:  # the profiles shared by every packed record (absent before issue 20)
        from spinewatch.domain.outcomes.packed import PROFILES  # noqa: PLC0415
    except ImportError:
        return sizes
    sizes["profiles"] = deep_size(PROFILES, seen)
    return sizes


def build(batches: Batches) -> dict[int, object]:
    from spinewatch.adapters.state_codec import decode_facts  # noqa: PLC0415
    from spinewatch.domain.outcomes.partition import (  # noqa: PLC0415
        PartitionState,
        apply_facts,
        settle,
    )

    states: dict[int, PartitionState] = {}
    for site, raw in batches:
        state = states.setdefault(zlib.crc32(site.encode()) % PARTITIONS, PartitionState())
        apply_facts(state, decode_facts(raw))
        if len(state.dirty) >= 5_000:  # the engine's default settle_after
            settle(state)
    for state in states.values():
        settle(state)
    return states  # type: ignore[return-value]


def segments_by_partition(batches: Batches) -> dict[int, list[bytes]]:
    owned: dict[int, list[bytes]] = {}
    for site, raw in batches:
        owned.setdefault(zlib.crc32(site.encode()) % PARTITIONS, []).append(raw)
    return owned


def measure(procedures: int, seed: int, top: int) -> dict[str, object]:
    from spinewatch.adapters.state_codec import decode_facts  # noqa: PLC0415
    from spinewatch.domain.outcomes.partition import rebuilt  # noqa: PLC0415

    batches = fact_batches(procedures, seed)
    events = sum(len(decode_facts(raw)) for _, raw in batches)
    # Resident growth first, untraced (tracemalloc's own bookkeeping is
    # several times the traced bytes); then the same build again, traced.
    gc.collect()
    rss_before = rss_bytes()
    states = build(batches)
    gc.collect()
    rss_grown = rss_bytes() - rss_before
    del states
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    states = build(batches)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(len(s.records) for s in states.values())  # type: ignore[attr-defined]
    diff = after.compare_to(before, "lineno")
    lines = [
        (f"{Path(d.traceback[0].filename).name}:{d.traceback[0].lineno}", d.size_diff / held)
        for d in diff[:top]
    ]
    traced = sum(d.size_diff for d in diff)
    structures = {k: v / held for k, v in by_structure(states).items()}
    del states
    gc.collect()
    owned = segments_by_partition(batches)
    began = time.process_time()
    for segments in owned.values():
        rebuilt(decode_facts(raw) for raw in segments)
    rebuild_s = time.process_time() - began
    return {
        "procedures": held,
        "events": events,
        "rss_per_procedure": rss_grown / held,
        "traced_per_procedure": traced / held,
        "structures_per_procedure": structures,
        "top_lines_per_procedure": lines,
        "rebuild_s_per_100k": rebuild_s / held * 100_000,
    }


def report(result: dict[str, object]) -> Iterator[str]:
    yield f"{result['procedures']} procedures, {result['events']} events"
    yield f"  RSS growth      {result['rss_per_procedure']:8.0f} B per procedure"
    yield f"  traced (alloc)  {result['traced_per_procedure']:8.0f} B per procedure"
    for name, size in result["structures_per_procedure"].items():  # type: ignore[attr-defined]
        yield f"    {name:<14}{size:8.0f} B"
    yield "  top allocating lines (B per procedure):"
    for where, size in result["top_lines_per_procedure"]:  # type: ignore[attr-defined]
        yield f"    {where:<32}{size:8.0f}"
    yield f"  rebuilt(): {result['rebuild_s_per_100k']:.2f} s CPU per 100k procedures"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--procedures", type=int, nargs="+", default=[100_000, 200_000])
    parser.add_argument("--seed", type=int, default=20260)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.seed, args.top)))
        return 0
    import subprocess  # noqa: PLC0415

    for procedures in args.procedures:
        # One process per size: a fresh heap, so RSS growth is this size's alone.
        command = [sys.executable, __file__, "--child", str(procedures), "--seed", str(args.seed)]
        out = subprocess.run(  # noqa: S603 - our own interpreter and script
            [*command, "--top", str(args.top)], capture_output=True, text=True, check=True,
            env=os.environ,
        ).stdout  # fmt: skip
        for line in report(json.loads(out.strip().splitlines()[-1])):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
