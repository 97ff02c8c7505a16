"""100,000 mutated messages through a running worker: every one counts or is dead-lettered.

Not a test (the suite runs 10,000 of the same in tests/test_fuzz_e2e.py);
this is the long run whose figures the README quotes. It starts an
embedded Tansu broker and one worker with its default settings (two ingest
processes), produces the seeded messages of tests/fuzzing.py, waits until
the worker has counted every message, and reports:

* accepted + dead-lettered events against what the messages stand for
  (must be equal, exactly), by reason;
* the dead-letter topic's record count against the counter;
* /readyz sampled every 0.5 s throughout (must always be 200);
* throughput and the worker's peak RSS.

    .venv/bin/python benchmarks/fuzz.py [--messages 100000] [--seed 20261207] [--json]

Exit status 1 if any invariant fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's `tests` package

from spinewatch.adapters.message_signing import new_secret
from spinewatch.devservers.tansu import EmbeddedBroker, free_port
from spinewatch.engine.settings import Settings
from tests.fuzzing import fuzzed_messages
from tests.probes import health
from tests.support import consume, produce, running_worker, scrape_async, sum_by


async def run(messages_wanted: int, seed: int) -> dict[str, Any]:
    messages = list(fuzzed_messages(seed, messages_wanted))
    units = sum(m.units for m in messages)
    async with EmbeddedBroker() as broker:
        settings = Settings(
            kafka_brokers=broker.bootstrap, tansu_compat=True, app_id="fuzz",
            metrics_port=free_port(), web_port=free_port(), signing_key=new_secret(),
        )  # fmt: skip
        readiness: Counter[int] = Counter()
        red_for: Counter[str] = Counter()
        async with running_worker(settings, broker.bootstrap) as worker:
            base = worker.metrics.url

            async def watch() -> None:
                while True:
                    status, body = await health(base)
                    readiness[status] += 1
                    red_for.update(line[:90] for line in body.get("failing", []))
                    await asyncio.sleep(0.5)

            watching = asyncio.create_task(watch())
            began = time.monotonic()
            await produce(
                broker.bootstrap,
                settings.events_topic,
                (m.value for m in messages),
                max_request_size=4 << 20,
            )
            produced = time.monotonic() - began
            while True:
                samples = await scrape_async(f"{base}/metrics")
                if sum_by(samples, "spinewatch_messages_received_total") >= len(messages):
                    break
                await asyncio.sleep(0.5)
            took = time.monotonic() - began
            watching.cancel()
            final = await health(base)
        dead = sum_by(samples, "spinewatch_events_deadlettered_total")
        letters = await consume(broker.bootstrap, settings.deadletter_topic, int(dead) + 1, 20)
    accepted = sum_by(samples, "spinewatch_events_accepted_total")
    reasons = {
        dict(labels)["reason"]: int(count)
        for (name, labels), count in samples.items()
        if name == "spinewatch_events_deadlettered_total"
    }
    return {
        "messages": len(messages),
        "message_bytes": sum(len(m.value) for m in messages),
        "kinds": dict(Counter(m.kind for m in messages)),
        "events_stood_for": units,
        "accepted": int(accepted),
        "dead_lettered": int(dead),
        "dead_letters_on_topic": len(letters),
        "by_reason": reasons,
        "readyz": {str(k): v for k, v in readiness.items()},
        "red_checks": dict(red_for),
        "readyz_at_end": final[0],
        "produce_s": round(produced, 1),
        "all_counted_s": round(took, 1),
        "messages_per_s": round(len(messages) / took),
        "peak_rss_mib_this_process": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ),
        "exact": accepted + dead == units and len(letters) == dead,
        "always_ready": set(readiness) == {200} and final[0] == 200,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.messages, args.seed))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0 if result["exact"] and result["always_ready"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
