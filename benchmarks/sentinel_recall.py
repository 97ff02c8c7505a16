"""CPU of the sentinel recall at a rebuild: bytes search first, against decoding every record.

    .venv/bin/python benchmarks/sentinel_recall.py [--procedures 100000,200000]

After a rebuild the drift monitor recalls every sentinel withdrawal the
records imply (`SentinelWatch.recall`). The records are packed msgpack
bytes; the recall decoded each to look for a retraction of a sentinel
complication, which few records hold. It now decodes only the records whose
bytes may hold both. For each size, the synthetic cohort's state (the fact
batches state_memory.py caches, four partitions), with one procedure in
a hundred given a pulmonary cement embolism that is then retracted (the
cohort itself has no retractions), is recalled both ways (best CPU time of
three) and the withdrawals compared.

Not part of the test suite. Progress to stderr, the table (or --json) to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any


def measure(procedures: int, seed: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).parent))
    from state_memory import build, fact_batches  # type: ignore[import-not-found]  # noqa: PLC0415

    from spinewatch.domain.drift import sentinels  # noqa: PLC0415
    from spinewatch.domain.outcomes.facts import ComplicationFact, RetractionFact  # noqa: PLC0415
    from spinewatch.domain.outcomes.partition import apply_facts, settle  # noqa: PLC0415

    states = build(fact_batches(procedures, seed))
    retracted = 0
    for state in states.values():
        items = []
        for n, procedure_id in enumerate(list(state.packed)):
            if n % 100 == 0:
                embolism = uuid.uuid4().bytes
                embolised = ComplicationFact(embolism, "pulmonary_cement_embolism", True)
                items.append((procedure_id, embolised))
                items.append((procedure_id, RetractionFact(uuid.uuid4().bytes, embolism)))
                retracted += 1
        apply_facts(state, items)
        settle(state)

    def searched() -> list[Any]:
        watch = sentinels.SentinelWatch()
        for state in states.values():
            watch.recall(state.records)
        return watch.found

    def decoded() -> list[Any]:  # the recall before issue 20
        found: list[Any] = []
        for state in states.values():
            for procedure_id, record in state.records.items():
                if sentinels._has_sentinel_retraction(record):
                    found.extend(sentinels.ended(procedure_id, sentinels.sentinel_history(record)))
        return found

    times: dict[str, float] = {}
    results = {}
    for name, recall in (("decode_every_record", decoded), ("bytes_search_first", searched)):
        best = float("inf")
        for _ in range(3):
            began = time.process_time()
            results[name] = recall()
            best = min(best, time.process_time() - began)
        times[name] = best
    if results["decode_every_record"] != results["bytes_search_first"]:
        raise SystemExit("the two recalls differ")
    held = sum(len(state.packed) for state in states.values())
    return {
        "procedures": held,
        "sentinel_retractions": retracted,
        "withdrawals": len(results["bytes_search_first"]),
        "decode_every_record_cpu_s": round(times["decode_every_record"], 3),
        "bytes_search_first_cpu_s": round(times["bytes_search_first"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--procedures", default="100000,200000")
    parser.add_argument("--seed", type=int, default=20260)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for size in (int(n) for n in args.procedures.split(",")):
        print(f"  {size} procedures...", file=sys.stderr)
        results.append(measure(size, args.seed))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        "| procedures | sentinel retractions "
        "| decode every record, CPU s | bytes search first, CPU s |"
    )
    print("|---|---|---|---|")
    for r in results:
        print(
            f"| {r['procedures']:,} | {r['sentinel_retractions']:,} "
            f"| {r['decode_every_record_cpu_s']} | {r['bytes_search_first_cpu_s']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
