"""The registry benchmark's worker phases: the bulk load, its memory and scrapes, restarts.

The worker is a real `spinewatch worker` subprocess (registry_services.py);
everything here reads it from outside, as an operator would: /metrics
(summed over labels), /readyz, and /proc for its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

import aiohttp
from pipeline import BenchmarkFailure, raw_consume
from pydantic import TypeAdapter
from registry_live import percentiles
from registry_services import Child, Processes, WorkerConfig, memory_mib, ready, start_worker
from registry_workload import RegistryWorkload, produce_stream, read_messages

from spinewatch.contracts.registry import Event
from spinewatch.contracts.topics import Topology

BULK_ADAPTER: TypeAdapter[list[Event]] = TypeAdapter(list[Event])
LOAD_POLL_S = 1.0  # a scrape during the load costs the worker's event loop: not too often
STALL_S = 60.0
# How long to wait for the drift chart designs to settle (set by --design-wait-s).
DESIGN_WAIT = {"s": 300.0}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Results(dict[str, Any]):
    """Figures by section, printed as they are filled in."""

    def add(self, section: str, **figures: Any) -> None:
        self.setdefault(section, {}).update(figures)
        log(f"  {section}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))


# Seconds each scrape took, since the phase reset it: a figure read by
# scraping is only as sharp as the scrapes (while the worker designs its
# drift charts, a scrape has taken tens of seconds on a loaded machine).
SCRAPE_DURATIONS: list[float] = []


async def scrape_samples(
    session: aiohttp.ClientSession, url: str, child: Child | None = None
) -> dict[str, float]:
    """Every spinewatch_ sample of /metrics, summed over its labels.

    When the worker stops answering, the failure quotes its stderr (why it
    ended: its supervisor gives up on a loop that stays red, exit 70).
    """
    began = time.perf_counter()
    try:
        async with session.get(f"{url}/metrics") as response:
            response.raise_for_status()
            text = await response.text()
    except aiohttp.ClientError as exc:
        if child is None:
            raise
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.process.wait(), 5)
        raise child.failure(f"/metrics: {exc!r}") from exc
    SCRAPE_DURATIONS.append(time.perf_counter() - began)
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("spinewatch_"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


async def wait_loaded(
    session: aiohttp.ClientSession, url: str, child: Child, procedures: int, events: int
) -> tuple[float | None, float]:
    """Poll until every event is applied and every procedure held.

    Returns the perf_counter at the start of the last scrape that showed no
    event applied (None if none did), and at the end of the first that
    showed them all: the window between them holds the whole load, so the
    rate from it is a lower bound, off by up to a poll and a scrape.
    """
    first: float | None = None
    SCRAPE_DURATIONS.clear()
    last_change = time.monotonic()
    progress = (0.0, 0.0)
    while True:
        if child.process.returncode is not None:
            raise child.failure("ended during the load")
        began = time.perf_counter()
        samples = await scrape_samples(session, url, child)
        now = (
            samples.get("spinewatch_events_applied_total", 0.0),
            samples.get("spinewatch_procedures_held", 0.0),
        )
        if now[0] == 0:
            first = began
        if now != progress:
            progress, last_change = now, time.monotonic()
        if now[0] >= events and now[1] >= procedures:
            return first, time.perf_counter()
        if time.monotonic() - last_change > STALL_S:
            raise child.failure(
                f"no progress for {STALL_S:.0f} s at {now[0]:.0f}/{events} events, "
                f"{now[1]:.0f}/{procedures} procedures"
            )
        await asyncio.sleep(LOAD_POLL_S)


async def wait_designed(session: aiohttp.ClientSession, url: str, child: Child) -> str:
    """Seconds until no drift chart design is pending (the worker's steady state).

    Not a failure when they are still pending after the wait: the worker
    works meanwhile, and the figures that follow say how well.
    """
    began = time.perf_counter()
    while time.perf_counter() - began < DESIGN_WAIT["s"]:
        if child.process.returncode is not None:
            raise child.failure("ended while designing its charts")
        samples = await scrape_samples(session, url, child)
        if samples.get("spinewatch_drift_design_pending", 1.0) == 0:
            return f"{time.perf_counter() - began:.1f}"
        await asyncio.sleep(LOAD_POLL_S)
    log(f"   chart designs still pending after {DESIGN_WAIT['s']:.0f} s; going on")
    return f"still pending after {time.perf_counter() - began:.0f}"


def check_counts(samples: dict[str, float], expected: dict[str, float], what: str) -> None:
    got = {name: samples.get(name, 0.0) for name in expected}
    if got != expected:
        raise BenchmarkFailure(f"{what}: counted {got}, expected {expected}")


async def restart(
    processes: Processes,
    session: aiohttp.ClientSession,
    config: WorkerConfig,
    worker: Child,
    *,
    sig: int,
    procedures: int,
) -> tuple[Child, dict[str, float | str]]:
    """Stop the worker with `sig`, start it on the same data: seconds to ready with its state."""
    began = time.perf_counter()
    await processes.stop(worker, sig)
    stopped = time.perf_counter() - began
    worker = await start_worker(processes, config)
    up = time.perf_counter() - worker.started
    green: float | None = None
    SCRAPE_DURATIONS.clear()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if worker.process.returncode is not None:
            raise worker.failure("ended while restarting")
        if green is None and await ready(session, config.url):
            green = time.perf_counter() - worker.started
        if green is not None:
            samples = await scrape_samples(session, config.url, worker)
            held = samples.get("spinewatch_procedures_held", 0)
            if held == procedures:
                total = time.perf_counter() - worker.started
                return worker, {
                    "stop_s": round(stopped, 2),
                    "to_started_line_s": round(up, 2),
                    "to_readyz_s": round(green, 2),
                    "to_ready_with_state_s": round(total, 2),
                    "slowest_scrape_s": round(max(SCRAPE_DURATIONS), 2),
                }
            if held > procedures:
                raise BenchmarkFailure(f"restart: {held} procedures held, {procedures} before")
        await asyncio.sleep(0.05)
    raise worker.failure("not ready with its state within 300 s")


async def bulk_load(
    processes: Processes,
    session: aiohttp.ClientSession,
    config: WorkerConfig,
    work: RegistryWorkload,
    *,
    steps: set[str],
    scrapes: int,
    results: Results,
) -> Child:
    """Idle memory, the bulk messages produced, their raw reference, the worker on them."""
    bootstrap = config.bootstrap
    topology = Topology(config.app_id)
    log("2. spinewatch worker (subprocess, RocksDB): idle, on empty topics")
    worker = await start_worker(processes, config)
    first_start = time.perf_counter() - worker.started
    await scrape_samples(session, config.url)  # a scrape's allocations belong to idle
    idle = memory_mib(worker)
    await processes.stop(worker)
    log(f"   producing {work.bulk_messages} bulk messages...")
    producer_s = await produce_stream(bootstrap, topology.events, read_messages(work.bulk_path))
    results.add("produce bulk", seconds=round(producer_s, 1))
    if "references" in steps:
        log("   raw aiokafka + list[Event] validation per bulk message")
        count = 0

        def validate(value: bytes) -> None:
            nonlocal count
            count += len(BULK_ADAPTER.validate_json(value))

        elapsed = await raw_consume(bootstrap, topology.events, work.bulk_messages, validate)
        if count != work.events:
            raise BenchmarkFailure(f"raw bulk reference: {count} events, not {work.events}")
        results.add("raw aiokafka + bulk validation", events_per_s=round(count / elapsed))

    log("3. spinewatch worker on the bulk messages")
    worker = await start_worker(processes, config)
    first, last = await wait_loaded(session, config.url, worker, work.procedures, work.events)
    samples = await scrape_samples(session, config.url)
    check_counts(
        samples,
        {
            "spinewatch_events_applied_total": work.events,
            "spinewatch_procedures_held": work.procedures,
            "spinewatch_events_duplicate_total": 0,
            "spinewatch_events_deadlettered_total": 0,
        },
        "bulk load",
    )
    load_scrape_s = max(SCRAPE_DURATIONS)
    designed = await wait_designed(session, config.url, worker)
    loaded = memory_mib(worker)
    window = last - (first or worker.started)  # see wait_loaded
    results.add(
        "spinewatch bulk",
        events_per_s_at_least=round(work.events / window),
        window_s=round(window, 1),
        process_start_to_all_applied_s=round(last - worker.started, 1),
        first_start_s=round(first_start, 1),
        then_designs_settled_s=designed,
        # The window is read by scraping every LOAD_POLL_S: it is this sharp.
        slowest_scrape_during_load_s=round(load_scrape_s, 2),
    )
    scale = 100_000 / work.procedures
    results.add(
        "memory",
        idle_rss_mib=round(idle["VmRSS"], 1),
        loaded_rss_mib=round(loaded["VmRSS"], 1),
        loaded_hwm_mib=round(loaded["VmHWM"], 1),
        rss_per_100k_mib=round((loaded["VmRSS"] - idle["VmRSS"]) * scale, 1),
        hwm_per_100k_mib=round((loaded["VmHWM"] - idle["VmRSS"]) * scale, 1),
        bytes_per_procedure=round((loaded["VmRSS"] - idle["VmRSS"]) * 2**20 / work.procedures),
    )
    durations = []
    for _ in range(scrapes):
        started = time.perf_counter()
        await scrape_samples(session, config.url)
        durations.append(time.perf_counter() - started)
    results.add("scrape at full state", **percentiles(durations))
    return worker
