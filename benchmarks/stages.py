"""Where the bulk path's CPU goes, stage by stage, without Kafka.

    .venv/bin/python benchmarks/stages.py [--procedures N]

`pipeline.py` times the whole path, on a machine whose speed drifts by a
third within minutes. This script replays the same seeded bulk messages
through each stage in-process and reports, per event, the CPU time of the
stage (process time around its own calls, best of three runs) and, where
`perf stat` can count them, the instructions, which do not drift with the
machine (the difference between running up to the stage and stopping one
stage earlier):

* for scale, `json.loads` of the same messages;
* in an ingest process: pydantic validation, reduction to facts, encoding;
* in the worker's event loop: decoding fact batches, applying them with the
  totals settled as the worker settles them, and the drift charts refreshed
  every 12 batches (about once a second at the bulk path's rate; a refresh
  settles first, as the worker's timer does).

Each level runs in a child process (under `perf stat` for the
instructions), so start-up (imports, designing the drift charts) cancels
out of the differences. Children run with PYTHONHASHSEED=0, so that dict
and set orders repeat: two runs' counts then agree within a few per cent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import msgspec

INGEST = ("validate", "facts", "encode")
WORKER = ("decode", "apply+settle", "drift")
REFERENCE = ("json.loads",)  # for scale: the stdlib parse of the same messages
PARTITIONS = 4
REFRESH_EVERY = 12  # fact batches between drift refreshes


def prepare(procedures: int, seed: int, into: Path) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from pipeline import make_workload  # type: ignore[import-not-found]  # noqa: PLC0415

    from spinewatch.engine.ingest import MessageOrigin, ingest_batch  # noqa: PLC0415

    work = make_workload(procedures, seed, 2000)
    messages = [value for _, value in work.bulk]
    origin = MessageOrigin("events", 0, 0)
    batches = [b for m in messages for b in ingest_batch([(m, origin)]).fact_batches]
    (into / "workload.msgpack").write_bytes(msgspec.msgpack.encode((messages, batches)))
    return int(work.events)


def run_stages(data: Path, side: str, upto: int) -> float:
    """Run `side`'s first `upto` stages; return their process seconds (imports excluded)."""
    messages, batches = msgspec.msgpack.decode(
        (data / "workload.msgpack").read_bytes(), type=tuple[list[bytes], list[tuple[str, bytes]]]
    )
    if side == "ingest":
        return _ingest(messages, upto)
    if side == "reference":
        began = time.process_time()
        for raw in messages[: len(messages) if upto else 0]:
            json.loads(raw)
        return time.process_time() - began
    return _worker(batches, upto)


def _ingest(messages: list[bytes], upto: int) -> float:
    from spinewatch.adapters.state_codec import encode_facts  # noqa: PLC0415
    from spinewatch.domain.outcomes.facts import fact_of  # noqa: PLC0415
    from spinewatch.engine.ingest import _BATCH_ADAPTER  # noqa: PLC0415

    spent = [0.0] * len(INGEST)
    clock = time.process_time
    for raw in messages[: len(messages) if upto else 0]:
        began = clock()
        events = _BATCH_ADAPTER.validate_json(raw)
        validated = clock()
        spent[0] += validated - began
        if upto >= INGEST.index("facts") + 1:
            facts = [(event.procedure_id.bytes, fact_of(event)) for event in events]
            reduced = clock()
            spent[1] += reduced - validated
            if upto >= INGEST.index("encode") + 1:
                encode_facts(facts)
                spent[2] += clock() - reduced
    return spent[upto - 1] if upto else 0.0


def _worker(batches: list[tuple[str, bytes]], upto: int) -> float:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from spinewatch.adapters.state_codec import decode_facts  # noqa: PLC0415
    from spinewatch.engine.bootstrap import drift_monitor  # noqa: PLC0415
    from spinewatch.engine.outcomes import OutcomeEngine  # noqa: PLC0415
    from spinewatch.engine.settings import Settings  # noqa: PLC0415

    # Every level designs the charts, so that cost cancels out of the differences.
    engine = OutcomeEngine(CollectorRegistry(), drift=drift_monitor(Settings()))
    table: dict[str, bytes] = {}
    owned = set(range(PARTITIONS))
    clock = time.process_time
    if upto == WORKER.index("decode") + 1:
        began = clock()
        for _, raw in batches:
            decode_facts(raw)
        return clock() - began
    applying = refreshing = 0.0
    for offset, (site, raw) in enumerate(batches[: len(batches) if upto else 0]):
        began = clock()
        engine.apply(table, zlib.crc32(site.encode()) % PARTITIONS, offset, raw)
        applied = clock()
        applying += applied - began
        if upto == len(WORKER) and offset % REFRESH_EVERY == REFRESH_EVERY - 1:
            engine.refresh_drift(owned)
            refreshing += clock() - applied
    began = clock()
    engine.totals(owned)  # settles what is left, as a reader would
    settled = clock()
    if upto < len(WORKER):
        # Decoding happens inside `apply`: the parent subtracts level 1.
        return applying + settled - began
    engine.refresh_drift(owned)
    return refreshing + clock() - settled


def child_command(data: Path, side: str, upto: int) -> list[str]:
    return [sys.executable, __file__, "--child", side, str(upto), "--data", str(data)]


def instructions(command: list[str]) -> int | None:
    perf = shutil.which("perf")
    if perf is None:
        return None
    env = os.environ | {"PYTHONHASHSEED": "0"}
    # Our own interpreter and script, and perf from PATH: no outside input.
    done = subprocess.run(  # noqa: S603
        [perf, "stat", "-x", ",", "-e", "instructions", *command],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in done.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("instructions") and fields[0].isdigit():
            return int(fields[0])
    return None  # perf is there but cannot count (no PMU in this VM)


def cpu_seconds(command: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # noqa: S603
        best = min(best, float(out.strip().splitlines()[-1]))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--procedures", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=20260)
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "UPTO"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, upto = args.child[0], int(args.child[1])
        print(run_stages(args.data, side, upto))
        return 0
    with tempfile.TemporaryDirectory(prefix="spinewatch-stages-") as tmp:
        data = Path(tmp)
        print(f"preparing {args.procedures} procedures...", file=sys.stderr)
        events = prepare(args.procedures, args.seed, data)
        rows = []
        for side, stages in (("reference", REFERENCE), ("ingest", INGEST), ("worker", WORKER)):
            below = instructions(child_command(data, side, 0))
            seconds_below = 0.0
            for upto, name in enumerate(stages, start=1):
                print(f"  {side}: {name}...", file=sys.stderr)
                command = child_command(data, side, upto)
                counted = instructions(command)
                per_event = None
                if counted is not None and below is not None:
                    per_event = round((counted - below) / events)
                seconds = cpu_seconds(command)
                if side == "worker" and name == "apply+settle":
                    seconds -= seconds_below  # `apply` decodes too
                rows.append((side, name, seconds / events * 1e6, per_event))
                below, seconds_below = counted, seconds
    print(f"{events} events ({args.procedures} procedures), per event:")
    print(f"{'process':<9} {'stage':<14} {'CPU us':>8} {'instructions':>13}")
    for side, name, micros, counted in rows:
        shown = f"{counted:,}" if counted is not None else "-"
        print(f"{side:<9} {name:<14} {micros:>8.2f} {shown:>13}")
    print(json.dumps({"events": events, "rows": rows}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
