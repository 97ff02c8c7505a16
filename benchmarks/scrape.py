"""What a /metrics scrape costs as the procedures held grow, without Kafka.

    .venv/bin/python benchmarks/scrape.py [--procedures 50000,100000,200000]

For each size, in a child process of its own: the seeded synthetic cohort
(`pipeline.make_workload`) goes through the ingest path in-process into
one `OutcomeEngine` with the worker's drift charts and follow-up schedule
(as `stages.py` does), leaving the last fact batches out. The site
designs are calibrated first (on the design thread, into a design cache
under --cache-dir, reused by later runs) so that no calibration lands in
a timed scrape. Then, live: each round applies one held-out fact batch
(~2,000 events of one site, more than a worker sees between two scrapes
at 50 events/s) and times, through the worker's own HTTP handler
(`MetricsServer`, aiohttp, on loopback):

* `scrape`: one GET /metrics, wall time at the client, median and max
  over the rounds;
* `render`: where the worker renders the cohort metrics off the scrape
  (`MetricRenderer`), one rendering after the batch: the work that moved
  out of the scrape (median, max);
* `idle scrape`: a GET /metrics with nothing new since the last one.

Before the renderer existed, the handler rendered everything on each
scrape, settling whatever had changed: run the script from an older
checkout to measure that (it detects which it has).

Not part of the test suite. Progress to stderr, the table (or --json) to
stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

PARTITIONS = 4
ROUNDS = 15
HELD_OUT = 20  # fact batches applied live, one per round (a few spare)


def measure(
    procedures: int, seed: int, cache_dir: Path, sites: int = 0, live_events: int = 0
) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).parent))
    from pipeline import _array, make_workload  # type: ignore[import-not-found]  # noqa: PLC0415

    from spinewatch.engine.ingest import MessageOrigin, ingest_batch  # noqa: PLC0415

    began = time.monotonic()
    origin = MessageOrigin("events", 0, 0)

    def fact_batches(values: list[bytes]) -> list[tuple[str, bytes]]:
        return [b for value in values for b in ingest_batch([(value, origin)]).fact_batches]

    if not sites and not live_events:  # as before: one held-out fact batch per round
        work = make_workload(procedures, seed, 2000)
        batches = fact_batches([m for _, m in work.bulk])
        events = work.events
        bulk, rounds = batches[:-HELD_OUT], [[b] for b in batches[-HELD_OUT:][:ROUNDS]]
    else:
        per_site = _site_events(procedures, seed, sites)
        events = sum(len(site_events) for site_events in per_site.values())
        # Held out: each site's latest events, enough for the rounds.
        tail = max(1, -(-ROUNDS * live_events // len(per_site))) if live_events else 2000
        held = {site: site_events[-tail:] for site, site_events in per_site.items()}
        values = [
            _array(site_events[start : start + 2000])
            for site_events in per_site.values()
            for start in range(0, len(site_events) - tail, 2000)
        ]
        bulk = fact_batches(values)
        rounds = [fact_batches(r) for r in _live_rounds(held, live_events, _array)]
    print(f"  {procedures}: {events} events prepared in {time.monotonic() - began:.0f} s",
          file=sys.stderr)  # fmt: skip
    return asyncio.run(_measure(bulk, rounds, cache_dir))


def _site_events(procedures: int, seed: int, sites: int) -> dict[str, list[bytes]]:
    """Per site, its encoded events in order: the registry's sites, or the five default ones."""
    from registry_workload import _site_messages, registry_sites  # type: ignore[import-not-found]  # noqa: PLC0415

    from spinewatch.demo.synthetic.cohort import default_sites  # noqa: PLC0415

    profiles = registry_sites(procedures, sites) if sites else list(default_sites(procedures))
    return {site.site_id: _site_messages(seed, site, 2000)[1] for site in profiles}


def _live_rounds(held: dict[str, list[bytes]], live_events: int, array: Any) -> list[list[bytes]]:
    """Per round, JSON arrays (one per site touched) of the held-out events.

    With `live_events`, each round takes that many events round-robin over the
    sites (at 50 events/s a 0.5 s rendering sees ~25 events, each site's
    clock moving); without, each round is one site's held-out events.
    """
    if not live_events:
        return [[array(site_events)] for site_events in list(held.values())[:ROUNDS]]
    queue = [
        (site, event)
        for column in itertools.zip_longest(*held.values())
        for site, event in zip(held, column, strict=True)
        if event is not None
    ]
    rounds = []
    for start in range(0, min(len(queue), ROUNDS * live_events), live_events):
        by_site: dict[str, list[bytes]] = {}
        for site, event in queue[start : start + live_events]:
            by_site.setdefault(site, []).append(event)
        rounds.append([array(site_events) for site_events in by_site.values()])
    return rounds


async def _measure(
    bulk: list[tuple[str, bytes]], rounds: list[list[tuple[str, bytes]]], cache_dir: Path
) -> dict[str, Any]:
    import aiohttp  # noqa: PLC0415
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from spinewatch.adapters.http import MetricsServer  # noqa: PLC0415
    from spinewatch.engine import bootstrap  # noqa: PLC0415
    from spinewatch.engine.settings import Settings  # noqa: PLC0415

    settings = Settings(data_dir=cache_dir)
    registry = CollectorRegistry()
    engine = bootstrap.outcome_engine(registry, settings)
    owned = set(range(PARTITIONS))
    table: dict[str, bytes] = {}
    for offset, (site, raw) in enumerate(bulk):
        engine.apply(table, _partition(site), offset, raw)
    began = time.monotonic()
    await _designed(engine, owned)
    print(f"  designs ready after {time.monotonic() - began:.0f} s", file=sys.stderr)
    renderer = _register(bootstrap, registry, engine, owned)
    server = MetricsServer(registry, "127.0.0.1", 0)
    if renderer is not None:
        server.rendered = renderer
        renderer.render()  # the first one settles what bulk left
    await server.start()
    scrapes, renders, idles, touched = [], [], [], []
    try:
        async with aiohttp.ClientSession() as session:
            await _get(session, server.url)  # without a renderer: settles what bulk left
            offset = len(bulk)
            for batches in rounds:
                for site, raw in batches:
                    engine.apply(table, _partition(site), offset, raw)
                    offset += 1
                touched.append(len({site for site, _ in batches}))
                if renderer is not None:
                    t0 = time.perf_counter()
                    renderer.render()
                    renders.append(time.perf_counter() - t0)
                scrapes.append(await _get(session, server.url))
                idles.append(await _get(session, server.url))
            body = await (await session.get(f"{server.url}/metrics")).text()
    finally:
        await server.stop()
        if engine.drift.designer is not None:
            engine.drift.designer.close()
    held = sum(len(state.records) for state in engine.partitions.values())
    return {
        "procedures_held": held,
        "renderer": renderer is not None,
        "sites": len({site for site, _ in bulk}),
        "sites_per_round": statistics.median(touched),
        "scrape_ms": _ms(scrapes),
        "idle_scrape_ms": _ms(idles),
        "render_ms": _ms(renders) if renders else None,
        "exposition_kib": round(len(body.encode()) / 1024),
    }


async def _designed(engine: Any, owned: set[int]) -> None:
    """Refresh until no site design is pending (calibrations land in the cache)."""
    while True:
        engine.refresh_drift(owned)
        if not engine.drift.designing():
            return
        await asyncio.sleep(0.5)


def _register(bootstrap: Any, registry: Any, engine: Any, owned: set[int]) -> Any:
    """The worker's collectors: on a renderer when this checkout has one."""
    from spinewatch.engine import metrics  # noqa: PLC0415

    collectors = [
        metrics.OutcomeCollector(engine, lambda: owned),
        metrics.FollowupCollector(engine, lambda: owned),
        metrics.DriftCollector(engine, lambda: owned),
        bootstrap.SilenceCollector(engine.silence, lambda: owned),
    ]
    try:
        from spinewatch.engine.metric_renderer import MetricRenderer  # noqa: PLC0415
    except ImportError:  # an older checkout: the scrape renders everything
        for collector in collectors:
            registry.register(collector)
        return None
    renderer = MetricRenderer(registry, 0.5)
    for collector in collectors:
        renderer.registry.register(collector)
    return renderer


async def _get(session: Any, url: str) -> float:
    began = time.perf_counter()
    async with session.get(f"{url}/metrics") as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}")
    return time.perf_counter() - began


def _partition(site: str) -> int:
    return zlib.crc32(site.encode()) % PARTITIONS


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "median": round(1000 * statistics.median(values), 1),
        "max": round(1000 * max(values), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--procedures", default="50000,100000,200000")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "sw-scrape")
    parser.add_argument(
        "--sites",
        type=int,
        default=0,
        help="the registry's sites (registry_workload); default: the five demo sites",
    )
    parser.add_argument(
        "--live-events",
        type=int,
        default=0,
        help="events per round, round-robin over the sites (25: 50 events/s "
        "between two renderings); default: one held-out 2,000-event batch",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(
            json.dumps(measure(args.child, args.seed, args.cache_dir, args.sites, args.live_events))
        )
        return 0
    results = []
    for size in (int(n) for n in args.procedures.split(",")):
        command = [sys.executable, __file__, "--child", str(size), "--seed", str(args.seed),
                   "--cache-dir", str(args.cache_dir), "--sites", str(args.sites),
                   "--live-events", str(args.live_events)]  # fmt: skip
        # Our own interpreter and script: one process per size, so memory
        # and caches of one size never help the next.
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ, check=False)  # noqa: S603
        sys.stderr.write(done.stderr)
        if done.returncode != 0:
            return done.returncode
        results.append({"procedures": size, **json.loads(done.stdout.splitlines()[-1])})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("| procedures held | sites (touched per round) | scrape ms (median / max) "
          "| idle scrape ms | render ms | body KiB |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in results:
        render = r["render_ms"]
        shown = f"{render['median']} / {render['max']}" if render else "(in the scrape)"
        print(
            f"| {r['procedures_held']:,} | {r['sites']} ({r['sites_per_round']}) "
            f"| {r['scrape_ms']['median']} / {r['scrape_ms']['max']} "
            f"| {r['idle_scrape_ms']['median']} | {shown} | {r['exposition_kib']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
