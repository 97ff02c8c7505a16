"""Registry-scale benchmark: 1,000,000 procedures through the bulk path, then a live stream.

    .venv/bin/python benchmarks/registry.py [--procedures N] [--quix-python PATH] [--json]

One run, one embedded Tansu broker (memory storage), one seeded cohort over
many sites (registry_workload.py), in this order:

1. references on a subset (`--reference-events`, single-event messages):
   raw aiokafka consume + `parse_event` and + `json.loads` (pipeline.py's
   `bench_raw`) and, with `--quix-python`, the Quix Streams peer
   (`bench_quix`, on `--quix-events` of them);
2. a real `spinewatch worker` subprocess (RocksDB store in the run's
   temporary directory) is started on the empty topics: its idle memory;
   it is stopped, every bulk message is produced, and the raw aiokafka
   reference reads them all (one `list[Event]` validation per array, as
   the worker's ingest does);
3. the worker is started again: bulk events/s (first progress on /metrics
   -> every event applied and every procedure held; start-up apart),
   resident memory at the end per 100k procedures, ~20 /metrics scrapes;
4. restart-to-ready after SIGTERM, then after SIGKILL: process start ->
   /readyz 200 AND `procedures_held` equal to the count before;
5. the live phase (registry_live.py) with Redis, `spinewatch alerting` and
   a real Alertmanager: event produced -> visible on /metrics, and sentinel
   event produced -> alert in Alertmanager's API, p50/p99.

Every count is checked (applied == events, procedures held == procedures,
nothing dead-lettered, the same procedures after each restart, every live
event visible and every sentinel paged); a miss fails the run (exit 1).
Progress on stderr, the table (or `--json`) on stdout; nothing is written
to the work tree; every process is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from pipeline import (
    CRASHES,
    PARTITIONS,
    SEED,
    BenchmarkFailure,
    Workload,
    bench_quix,
    bench_raw,
    shut_down,
)
from registry_live import live_phase, skip_alerting_backlog
from registry_services import (
    Processes,
    WorkerConfig,
    start_alerting,
    start_alertmanager,
    start_redis,
)
from registry_worker import DESIGN_WAIT, Results, bulk_load, log, restart, wait_designed
from registry_workload import (
    LiveEvents,
    generate,
)

from spinewatch.contracts.topics import Topology
from spinewatch.devservers.tansu import EmbeddedBroker, free_port
from spinewatch.engine.settings import Settings
from spinewatch.patches.tansu import apply_tansu_compat

STEPS = ("references", "quix", "restart", "kill", "live", "alerts")


async def run(options: argparse.Namespace, results: Results, processes: Processes) -> None:
    apply_tansu_compat()
    run_id = uuid.uuid4().hex[:8]
    began = time.perf_counter()
    tmp = processes.tmp
    steps = set(STEPS) - set(options.skip)
    log(f"generating {options.procedures} procedures over {options.sites} sites...")
    work = await generate(
        procedures=options.procedures,
        sites=options.sites,
        seed=options.seed,
        bulk_size=options.bulk_size,
        reference_events=max(options.reference_events, options.quix_events),
        into=tmp / "bulk.messages",
        log=log,
    )
    results.add(
        "workload",
        procedures=work.procedures,
        events=work.events,
        sites=work.sites,
        bulk_messages=work.bulk_messages,
        generate_s=round(work.generate_s, 1),
    )
    load_before = os.getloadavg()
    async with EmbeddedBroker() as broker, aiohttp.ClientSession() as session:
        bootstrap = broker.bootstrap
        log(f"embedded Tansu broker on {bootstrap}")
        if "references" in steps:
            log("1. raw aiokafka on single-event messages")
            subset = work.singles[: options.reference_events]
            for case in await bench_raw(bootstrap, run_id, _workload(subset)):
                results.add(case.case, events=case.events, events_per_s=round(case.events_per_s))
        if "quix" in steps and options.quix_python:
            log(f"1b. the Quix Streams peer on {options.quix_events} single-event messages")
            peer = await bench_quix(
                options.quix_python, bootstrap, _workload(work.singles[: options.quix_events]), tmp
            )
            results.add(
                "quix streams, state write/event",
                events=peer.events,
                events_per_s=round(peer.events_per_s),
            )
        work.singles.clear()

        config = WorkerConfig(
            bootstrap,
            f"registry-{run_id}",
            tmp / f"registry-{run_id}",
            free_port(),
            options.overrides,
        )
        worker = await bulk_load(
            processes, session, config, work, steps=steps, scrapes=options.scrapes, results=results
        )

        for step, sig in (("restart", signal.SIGTERM), ("kill", signal.SIGKILL)):
            if step not in steps:
                continue
            log(f"4. restart after {signal.Signals(sig).name}")
            worker, figures = await restart(
                processes, session, config, worker, sig=sig, procedures=work.procedures
            )
            figures["then_designs_settled_s"] = await wait_designed(session, config.url, worker)
            results.add(f"restart after {signal.Signals(sig).name}", **figures)

        if "live" in steps:
            await live(
                options,
                results=results,
                processes=processes,
                session=session,
                config=config,
                run_id=run_id,
                steps=steps,
            )
    results["facts"] = {
        "total_s": round(time.perf_counter() - began, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "partitions": PARTITIONS,
        "settings_overrides": options.overrides,
        # Other work on the machine slows every figure: say how much there was.
        "loadavg_1m_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
    }


async def live(
    options: argparse.Namespace,
    *,
    results: Results,
    processes: Processes,
    session: aiohttp.ClientSession,
    config: WorkerConfig,
    run_id: str,
    steps: set[str],
) -> None:
    bootstrap = config.bootstrap
    topology = Topology(config.app_id)
    alertmanager_url: str | None = None
    if "alerts" in steps:
        log("5. Redis, Alertmanager and `spinewatch alerting`")
        redis_url = await start_redis(processes)
        alertmanager_url = await start_alertmanager(processes, session)
        skipped = await skip_alerting_backlog(
            bootstrap, topology.drift, f"{config.app_id}-alerting"
        )
        log(f"   the alerting service starts after the {skipped} drift messages of the load")
        await start_alerting(
            processes,
            session,
            bootstrap=bootstrap,
            app_id=config.app_id,
            redis_url=redis_url,
            alertmanager_url=alertmanager_url,
        )
    log(f"5. live: {options.live_rate:g} events/s for {options.live_s:g} s")
    result = await live_phase(
        bootstrap=bootstrap,
        events_topic=topology.events,
        drift_topic=topology.drift,
        worker_url=config.url,
        alertmanager_url=alertmanager_url,
        live=LiveEvents(
            options.seed + 1, options.sites, run_id, int(options.live_rate * options.live_s)
        ),
        rate=options.live_rate,
        seconds=options.live_s,
        sentinel_every_s=options.sentinel_every_s if alertmanager_url else 0,
        log=log,
    )
    results.add("live: produced -> visible on /metrics", **result.metric_visible)
    results.add("live: scrape during the live phase", **result.scrape_during)
    if alertmanager_url:
        results.add(
            "live: sentinel produced -> alert in Alertmanager", **result.alert_in_alertmanager
        )
        results.add(
            "live: sentinel produced -> on the drift topic", **result.sentinel_on_drift_topic
        )
        results.add(
            "live: drift topic -> alert in Alertmanager", **result.drift_topic_to_alertmanager
        )


def _workload(singles: list[tuple[bytes, bytes]]) -> Workload:
    return Workload(procedures=0, events=len(singles), singles=singles, bulk=[])


def table(results: Results) -> str:
    lines = []
    for section, figures in results.items():
        if section == "facts":
            continue
        text = ", ".join(
            f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in figures.items()
        )
        lines.append(f"{section:<52} {text}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--procedures", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=120, help="registry sites (default 120)")
    parser.add_argument("--bulk-size", type=int, default=2000, help="events per bulk message")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--reference-events", type=int, default=400_000, help="for the raw single-message case"
    )
    parser.add_argument("--quix-python", metavar="PATH", help="an interpreter with quixstreams")
    parser.add_argument("--quix-events", type=int, default=200_000, help="the peer's subset")
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument(
        "--design-wait-s",
        type=float,
        default=300.0,
        help="after the load and each restart, wait this long for the chart designs to settle",
    )
    parser.add_argument("--live-rate", type=float, default=50.0, help="events/s (default 50)")
    parser.add_argument("--live-s", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--sentinel-every-s", type=float, default=2.0)
    parser.add_argument("--skip", default="", help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    args.skip = [s for s in args.skip.split(",") if s]
    if not set(args.skip) <= set(STEPS):
        parser.error(f"--skip: choose from {','.join(STEPS)}")
    if args.procedures < args.sites or args.sites < 1 or args.live_rate <= 0:
        parser.error("need --procedures >= --sites >= 1 and --live-rate > 0")
    if args.live_s * args.live_rate < 2 * args.live_rate + 1 and "live" not in args.skip:
        parser.error("--live-s: at least 3 s")
    args.overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or name not in Settings.model_fields:
            parser.error(f"{item!r}: expected FIELD=VALUE with a Settings field")
        args.overrides[name] = value
    return args


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    DESIGN_WAIT["s"] = options.design_wait_s
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger().addHandler(CRASHES)
    loop = asyncio.new_event_loop()
    results = Results()
    with tempfile.TemporaryDirectory(prefix="spinewatch-registry-") as tmp_name:
        processes = Processes(Path(tmp_name))
        try:
            try:
                loop.run_until_complete(run(options, results, processes))
            finally:
                loop.run_until_complete(processes.close())
        except (Exception, KeyboardInterrupt) as exc:
            processes.kill_all()
            if results:
                log("\ncompleted before the failure:\n" + table(results))
            if isinstance(exc, BenchmarkFailure):
                log(f"\nBENCHMARK FAILED: {exc}")
            else:
                traceback.print_exc()
                log("\nBENCHMARK FAILED (see the traceback above)")
            return 130 if isinstance(exc, KeyboardInterrupt) else 1
    shut_down(loop)
    if options.json:
        log(table(results))
        print(json.dumps(results, indent=2))
    else:
        print(table(results))
        facts = results["facts"]
        print(
            f"\ntotal {facts['total_s']} s on {facts['cpus']} CPUs; load average (1 min) "
            f"before/after {facts['loadavg_1m_before_after']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
