"""Throughput and memory benchmark of the spinewatch pipeline on an embedded broker.

    .venv/bin/python benchmarks/pipeline.py [--procedures N] [--json]

One run starts ONE embedded Tansu broker and measures, on the same broker and
the same seeded synthetic events (no duplicates, no malformed payloads, no
retractions, so every count is exact):

1. raw aiokafka consume + `parse_event` (and + `json.loads` only): the
   ceiling for any Python consumer on this machine and broker;
2. a bare faust agent that only parses: faust's own per-event cost;
   with `--quix-python PATH`, also the peer: Quix Streams with a state write
   per event (`quix_peer.py`, run by that interpreter on the same broker);
3. the spinewatch worker (in-process, `running_worker`), one event per message;
4. the spinewatch worker on the bulk path: JSON arrays of ~2000 events per
   message, keyed by site_id (a replay);
5. peak RSS of a `spinewatch worker` subprocess per 100k open procedures;
6. with `--quix-python` and `--rounds N`, N - 1 further rounds of the peer
   and the bulk path back to back, in alternating order (the first round is
   the peer, then case 4). This machine's speed drifts by a third within
   minutes, so a single pair can favour whichever ran in the faster spell;
   the ratio of each adjacent pair, and their median, do not.

By default (`--produce before`) each case's messages are produced into a fresh
topic before its consumer starts, so a case times consumption only; the
producer's own time is reported apart. `--produce during` starts the consumer
first and times from the first send instead (producer and consumer then share
this process's CPU). Every case checks that each distinct event was counted
exactly once and fails loudly otherwise. Nothing is written to the work tree:
faust data directories live in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import signal
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import Counter

from spinewatch.adapters.kafka_admin import ensure_topics
from spinewatch.adapters.message_signing import new_secret
from spinewatch.contracts import parse_event
from spinewatch.contracts.topics import DEFAULT_PARTITIONS, Topology
from spinewatch.demo.synthetic.cohort import default_sites, generate_cohort
from spinewatch.devservers.tansu import EmbeddedBroker, free_port
from spinewatch.engine.bootstrap import RunningWorker, running_worker
from spinewatch.engine.settings import Settings
from spinewatch.patches.tansu import apply_tansu_compat

PARTITIONS = DEFAULT_PARTITIONS
SEED = 20260
STALL_S = 30.0  # no progress for this long fails a case
DEADLINE_S = 150.0  # a case may take at most this long
POLL_S = 0.005
RSS_POLL_S = 0.5  # a /metrics scrape computes every cohort report: not free
CASES = ("raw", "faust", "single", "bulk", "restore", "rss")

Message = tuple[bytes, bytes]  # (key, value)


class BenchmarkFailure(RuntimeError):
    """A case did not count every event exactly once, or stalled."""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class CrashWatch(logging.Handler):
    """Remembers the first error logged by faust/mode/spinewatch (an agent crash)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.first is None and record.name.startswith(("faust", "mode", "spinewatch")):
            detail = repr(record.exc_info[1]) if record.exc_info else ""
            self.first = f"{record.name}: {record.getMessage()[:300]} {detail[:600]}".strip()

    def check(self, what: str) -> None:
        if self.first is None:
            return
        hint = ""
        if "MessageSizeTooLarge" in self.first:
            hint = (
                "\n  (a fact message outgrew the producer's max_request_size of 1 MB: see"
                " MAX_FACTS_PER_MESSAGE in spinewatch.engine.app; a smaller ingest_batch_max,"
                " e.g. --bulk-set ingest_batch_max=3, bounds it too)"
            )
        raise BenchmarkFailure(f"{what}: the worker logged an error: {self.first}{hint}")


CRASHES = CrashWatch()


# --- workload -------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    procedures: int
    events: int  # distinct events: what every case must count
    singles: list[Message]  # one event per message, keyed by procedure_id
    bulk: list[Message]  # JSON arrays of up to bulk_size events, keyed by site_id


def make_workload(procedures: int, seed: int, bulk_size: int) -> Workload:
    cohort = generate_cohort(
        seed,
        default_sites(procedures),
        duplicate_share=0.0,
        malformed=0,
        retractions=0,
    )
    if len(cohort.deliveries) != len(cohort.events):
        raise BenchmarkFailure("the cohort has redeliveries; counts would not be exact")
    singles: list[Message] = []
    chunks: dict[str, list[bytes]] = defaultdict(list)
    bulk: list[Message] = []
    # Delivery order (with the generator's early/late follow-ups), per site
    # for the bulk path: a site's arrays share a key, so they stay in order.
    for raw in cohort.deliveries:
        event = json.loads(raw)
        singles.append((event["procedure_id"].encode(), raw))
        chunk = chunks[event["site_id"]]
        chunk.append(raw)
        if len(chunk) >= bulk_size:
            bulk.append((event["site_id"].encode(), _array(chunk)))
            chunk.clear()
    bulk += [(site.encode(), _array(chunk)) for site, chunk in chunks.items() if chunk]
    return Workload(procedures, len(cohort.events), singles, bulk)


def _array(items: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


# --- broker helpers -------------------------------------------------------------


async def produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> float:
    """Send all messages with a batching producer; seconds until all are acknowledged."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=1 << 20,
        max_request_size=32 << 20,
        acks=1,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        pending = [await producer.send(topic, value=value, key=key) for key, value in messages]
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def wait_for_count(
    what: str, progress: Callable[[], int], expected: int, *, deadline_s: float = DEADLINE_S
) -> None:
    """Poll `progress` until it reaches `expected`; fail on a stall or the deadline."""
    start = last_change = time.monotonic()
    last = -1
    while True:
        value = progress()
        if value >= expected:
            return
        CRASHES.check(what)
        now = time.monotonic()
        if value != last:
            last, last_change = value, now
        if now - last_change > STALL_S or now - start > deadline_s:
            raise BenchmarkFailure(
                f"{what}: {value}/{expected} after {now - start:.1f} s "
                f"(no progress for {now - last_change:.1f} s)"
            )
        await asyncio.sleep(POLL_S)


def counter_value(counter: Counter) -> int:
    """Sum of a counter's `_total` samples (over all label values)."""
    return int(
        sum(
            sample.value
            for metric in counter.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
    )


@contextlib.contextmanager
def profiled(enabled: bool, title: str) -> Iterator[None]:
    if not enabled:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats(order).print_stats(30)
            log(f"\n=== cProfile of {title}, top 30 by {order} ===\n{out.getvalue()}")


# --- CPU accounting ---------------------------------------------------------------


def _cpu_seconds(pid: int) -> tuple[str, int, float]:
    """(command name, parent pid, user + system CPU seconds) from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return name, int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks


def cpu_by_role() -> dict[str, float]:
    """CPU seconds so far of this process (the worker's event loop and its
    producer/consumer threads), its ingest child processes and the broker."""
    me = os.getpid()
    roles = {"worker": _cpu_seconds(me)[2], "ingest processes": 0.0, "broker": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            name, parent, seconds = _cpu_seconds(int(entry.name))
            if parent == me:
                roles["broker" if name.startswith("tansu") else "ingest processes"] += seconds
    return roles


def cpu_per_event(before: dict[str, float], events: int, elapsed_s: float) -> dict[str, float]:
    """Microseconds of CPU per event by role since `before`, and the cores kept busy."""
    after = cpu_by_role()
    used = {role: after[role] - before[role] for role in before}
    extra = {f"cpu_us_per_event.{role}": round(s / events * 1e6, 2) for role, s in used.items()}
    extra["cpu_us_per_event.total"] = round(sum(used.values()) / events * 1e6, 2)
    extra["cores_busy"] = round(sum(used.values()) / elapsed_s, 2)
    return extra


# --- results --------------------------------------------------------------------


@dataclass
class CaseResult:
    case: str
    events: int
    messages: int
    elapsed_s: float  # the timed window, see `window`
    window: str
    producer_s: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else float("inf")

    def as_json(self) -> dict[str, Any]:
        fields = asdict(self) | {
            "elapsed_s": round(self.elapsed_s, 3),
            "producer_s": None if self.producer_s is None else round(self.producer_s, 3),
        }
        return fields | {"events_per_s": round(self.events_per_s)}


@dataclass
class RssResult:
    procedures: int
    events: int
    messages: int
    idle_rss_mib: float
    idle_hwm_mib: float
    peak_hwm_mib: float
    settled_rss_mib: float
    peak_growth_per_100k_mib: float  # (peak VmHWM - idle VmRSS) per 100k procedures
    settled_growth_per_100k_mib: float  # (VmRSS when all held - idle VmRSS) per 100k
    elapsed_s: float
    producer_s: float
    scrape_ms: float  # one /metrics scrape with every procedure held


def report(result: CaseResult) -> CaseResult:
    producer = f", producer {result.producer_s:.2f} s" if result.producer_s is not None else ""
    log(
        f"  {result.case}: {result.events} events in {result.elapsed_s:.2f} s "
        f"= {result.events_per_s:,.0f} ev/s ({result.window}{producer})"
    )
    cpu = {k.removeprefix("cpu_us_per_event."): v for k, v in result.extra.items() if "cpu" in k}
    if cpu:
        parts = ", ".join(f"{role} {us:.1f}" for role, us in cpu.items())
        log(f"    CPU us per event: {parts}; {result.extra['cores_busy']:.2f} cores busy")
    return result


# --- 1. raw aiokafka --------------------------------------------------------------


async def raw_consume(
    bootstrap: str, topic: str, expected: int, handle: Callable[[bytes], object]
) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        count = 0
        started = last_change = time.perf_counter()
        while count < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=100_000)
            for records in batches.values():
                for record in records:
                    handle(record.value)
                count += len(records)
            now = time.perf_counter()
            if batches:
                last_change = now
            elif now - last_change > STALL_S:
                raise BenchmarkFailure(f"raw consumer stalled at {count}/{expected}")
        elapsed = time.perf_counter() - started
        if count != expected:
            raise BenchmarkFailure(f"raw consumer read {count} records, expected {expected}")
        return elapsed
    finally:
        await consumer.stop()


async def bench_raw(bootstrap: str, run_id: str, work: Workload) -> list[CaseResult]:
    # The references run on topics named as the product names its own.
    topic = Topology(f"bench-raw-{run_id}").events
    await ensure_topics(bootstrap, [topic], PARTITIONS)
    producer_s = await produce(bootstrap, topic, work.singles)
    results = []
    for name, handle in (
        ("raw aiokafka + parse_event", parse_event),
        ("raw aiokafka + json.loads", json.loads),
    ):
        elapsed = await raw_consume(bootstrap, topic, work.events, handle)
        window = "first getmany -> last record handled"
        results.append(
            report(CaseResult(name, work.events, len(work.singles), elapsed, window, producer_s))
        )
    return results


# --- 2. bare faust agent ----------------------------------------------------------


@dataclass
class Progress:
    count: int = 0
    first: float | None = None
    last: float = 0.0

    def tick(self) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.count += 1
        self.last = now


async def bench_quix(python: str, bootstrap: str, work: Workload, tmp: Path) -> CaseResult:
    """The peer, in its own interpreter (its dependencies are not ours)."""
    events = tmp / "quix-peer-events.jsonl"
    events.write_bytes(b"".join(value + b"\n" for _, value in work.singles))
    script = Path(__file__).with_name("quix_peer.py")
    process = await asyncio.create_subprocess_exec(
        python,
        str(script),
        "--bootstrap",
        bootstrap,
        "--events",
        str(events),
        "--partitions",
        str(PARTITIONS),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), DEADLINE_S * 2)
    if process.returncode != 0:
        raise BenchmarkFailure(f"the Quix Streams peer exited with {process.returncode}")
    peer = json.loads(stdout.decode().strip().splitlines()[-1])
    if peer["events"] != work.events:
        raise BenchmarkFailure(f"the peer handled {peer['events']} events, not {work.events}")
    result = report(
        CaseResult(
            "quix streams, state write/event",
            work.events,
            work.events,
            peer["elapsed_s"],
            "first event handled -> final commit (its own process)",
            peer["producer_s"],
            # Without the deferred commit of its state writes, for reference.
            extra={"events_per_s_to_last_event": work.events / peer["to_last_event_s"]},
        )
    )
    log(
        f"    to its last event, before committing its state writes: "
        f"{result.extra['events_per_s_to_last_event']:,.0f} ev/s"
    )
    return result


async def bench_faust(
    bootstrap: str, run_id: str, work: Workload, tmp: Path, produce_first: bool
) -> CaseResult:
    app_id = f"bench-faust-{run_id}"
    topic_name = Topology(app_id).events
    await ensure_topics(bootstrap, [topic_name], PARTITIONS)
    producer_s = await produce(bootstrap, topic_name, work.singles) if produce_first else None
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(tmp / app_id),
        autodiscover=False,
        topic_partitions=PARTITIONS,
        topic_replication_factor=1,
        web_enabled=False,
        web_port=free_port(),
        producer_max_batch_size=16,
        table_standby_replicas=0,
        broker_session_timeout=3,
        broker_heartbeat_interval=1,
        logging_config=None,
    )
    topic = app.topic(topic_name, value_type=bytes, value_serializer="raw")
    progress = Progress()

    async def parse_only(stream: Any) -> None:
        async for value in stream:
            parse_event(value)
            progress.tick()

    app.agent(topic, name="parse")(parse_only)
    started = asyncio.Event()

    async def on_startup_finished() -> None:
        started.set()

    app.on_startup_finished = on_startup_finished
    await app.start()
    try:
        await asyncio.wait_for(started.wait(), 60)
        ready = time.perf_counter()
        if not produce_first:
            producer_s = await produce(bootstrap, topic_name, work.singles)
        await wait_for_count("bare faust agent", lambda: progress.count, work.events)
    finally:
        await app.stop()
    if progress.count != work.events or progress.first is None:
        raise BenchmarkFailure(f"faust agent parsed {progress.count}, expected {work.events}")
    start_to_end = progress.last - ready
    return report(
        CaseResult(
            "bare faust agent, parse only",
            work.events,
            len(work.singles),
            progress.last - progress.first,
            "first -> last event in the agent",
            producer_s,
            {"ready_to_last_event_s": round(start_to_end, 3)},
        )
    )


# --- 3./4. spinewatch in-process --------------------------------------------------

STOP_S = 15.0


@contextlib.asynccontextmanager
async def bounded_worker(settings: Settings, bootstrap: str) -> AsyncIterator[RunningWorker]:
    """`running_worker`, but a stop that hangs is abandoned after STOP_S.

    After an agent crashed, faust's stop waits forever for the acks of the
    messages the dead agent held, and ignores cancellation while it waits.
    """
    context = running_worker(settings, bootstrap)
    worker = await context.__aenter__()
    try:
        yield worker
    except BaseException as exc:
        if not await finishes(context.__aexit__(type(exc), exc, exc.__traceback__), STOP_S):
            log(f"  worker {settings.app_id} did not stop within {STOP_S:.0f} s; abandoned")
        raise
    if not await finishes(context.__aexit__(None, None, None), STOP_S):
        raise BenchmarkFailure(f"worker {settings.app_id} did not stop within {STOP_S:.0f} s")


async def finishes(awaitable: Coroutine[Any, Any, object], timeout_s: float) -> bool:
    """Run `awaitable` for at most `timeout_s`; on time-out leave it running."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if task in done:
        task.result()  # re-raise its error, if any
        return True
    return False


SIGNING_KEY = new_secret()  # this run's internal-topic key


def bench_settings(bootstrap: str, app_id: str, tmp: Path, overrides: dict[str, str]) -> Settings:
    # Field values from strings, exactly as the worker subprocess gets them.
    values: dict[str, Any] = {
        "kafka_brokers": bootstrap,
        "app_id": app_id,
        "partitions": PARTITIONS,
        "metrics_port": 0,
        "web_port": free_port(),
        "session_timeout_s": 3,
        "data_dir": tmp / app_id,
        # The benchmark's broker is its own embedded Tansu, reached by address.
        "tansu_compat": True,
        # Fact batches are signed and verified, as in production.
        "signing_key": SIGNING_KEY,
    }
    return Settings.model_validate(values | overrides)


async def bench_spinewatch(
    bootstrap: str,
    app_id: str,
    case: str,
    messages: Sequence[Message],
    *,
    work: Workload,
    tmp: Path,
    produce_first: bool,
    profile: bool,
    overrides: dict[str, str],
) -> tuple[CaseResult, Settings, dict[Any, Any]]:
    settings = bench_settings(bootstrap, app_id, tmp, overrides)
    producer_s: float | None = None
    if produce_first:
        await ensure_topics(bootstrap, settings.topics.names(), settings.partitions)
        producer_s = await produce(bootstrap, settings.events_topic, messages)
    async with bounded_worker(settings, bootstrap) as worker:
        metrics = worker.engine.metrics

        def applied() -> int:
            return counter_value(metrics.applied)

        # Like the raw and bare-faust cases, time the processing, not the
        # consumer-group join: start once this worker owns every partition.
        ready = time.perf_counter()
        await wait_for_count(
            f"{case}: partitions assigned", lambda: len(worker.active_partitions()), PARTITIONS
        )
        join_s = time.perf_counter() - ready
        with profiled(profile, case):
            cpu_before = cpu_by_role()
            started = time.perf_counter()
            if not produce_first:
                producer_s = await produce(bootstrap, settings.events_topic, messages)
            await wait_for_count(
                case, applied, work.events, deadline_s=DEADLINE_S * (4 if profile else 1)
            )
            # Totals are settled lazily (on read): the window includes the
            # read that brings them up to date with every applied event.
            totals = worker.engine.totals(worker.active_partitions())
            elapsed = time.perf_counter() - started
            cpu = cpu_per_event(cpu_before, work.events, elapsed)
        counts = {
            "applied": applied(),
            "duplicates": counter_value(metrics.duplicates),
            "deadlettered": counter_value(metrics.dead_lettered),
            "messages": counter_value(metrics.messages),
            "procedures_held": int(metrics.open_procedures._value.get()),
        }
    expected = {
        "applied": work.events,
        "duplicates": 0,
        "deadlettered": 0,
        "messages": len(messages),
        "procedures_held": work.procedures,
    }
    if counts != expected:
        raise BenchmarkFailure(f"{case}: counted {counts}, expected {expected}")
    window = (
        "partitions assigned -> all applied and settled"
        if produce_first
        else "first send -> all applied and settled"
    )
    extra = {"ready_to_assigned_s": round(join_s, 3)} | cpu
    result = report(
        CaseResult(case, work.events, len(messages), elapsed, window, producer_s, extra)
    )
    return result, settings, totals


async def bench_restore(
    bootstrap: str, settings: Settings, work: Workload, expected: dict[Any, Any]
) -> CaseResult:
    """A fresh worker on the same topics: state back from the changelog segments."""
    started = time.perf_counter()
    async with bounded_worker(settings, bootstrap) as worker:
        metrics = worker.engine.metrics
        await wait_for_count(
            "restore", lambda: int(metrics.open_procedures._value.get()), work.procedures
        )
        totals = worker.engine.totals(worker.active_partitions())
        elapsed = time.perf_counter() - started
    if totals != expected:
        raise BenchmarkFailure("restore: the restored totals differ from the live ones")
    return report(
        CaseResult(
            "spinewatch restore from changelog",
            work.events,
            0,
            elapsed,
            "worker start (incl. group join) -> state restored, totals equal",
        )
    )


# --- 5. peak RSS of a worker subprocess ------------------------------------------


CHILDREN: set[asyncio.subprocess.Process] = set()  # worker subprocesses still running


def proc_status_mib(pid: int) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024  # kB -> MiB
    return values


def worker_error(stderr_path: Path) -> str | None:
    """The first error the worker subprocess logged from faust, mode or spinewatch."""
    with stderr_path.open(errors="replace") as lines:
        for line in lines:
            if any(f" ERROR {name}" in line for name in ("faust", "mode", "spinewatch")):
                return line.strip()[:600]
    return None


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url) as response:
        response.raise_for_status()
        text = await response.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("spinewatch_") and "{" not in line:
            name, _, value = line.partition(" ")
            samples[name] = float(value)
    return samples


async def bench_rss(
    bootstrap: str, run_id: str, work: Workload, tmp: Path, overrides: dict[str, str]
) -> RssResult:
    app_id = f"bench-rss-{run_id}"
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINEWATCH_")}
    env |= {
        "SPINEWATCH_KAFKA_BROKERS": bootstrap,
        "SPINEWATCH_APP_ID": app_id,
        "SPINEWATCH_PARTITIONS": str(PARTITIONS),
        "SPINEWATCH_METRICS_PORT": str(metrics_port),
        "SPINEWATCH_WEB_PORT": str(free_port()),
        "SPINEWATCH_SESSION_TIMEOUT_S": "3",
        "SPINEWATCH_DATA_DIR": str(tmp / app_id),
        "SPINEWATCH_TANSU_COMPAT": "true",  # the benchmark's own embedded Tansu
        "SPINEWATCH_SIGNING_KEY": SIGNING_KEY,
    }
    env |= {f"SPINEWATCH_{name.upper()}": value for name, value in overrides.items()}
    stderr_path = tmp / f"{app_id}.stderr"
    with stderr_path.open("wb") as stderr:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "spinewatch",
            "worker",
            env=env,
            cwd=tmp,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    CHILDREN.add(worker)
    try:
        assert worker.stdout is not None  # noqa: S101 - stdout=PIPE above
        line = await asyncio.wait_for(worker.stdout.readline(), 90)
        if not line:
            tail = stderr_path.read_text(errors="replace")[-2000:]
            raise BenchmarkFailure(f"worker subprocess exited before ready:\n{tail}")
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        async with aiohttp.ClientSession() as session:
            await scrape(session, url)  # a scrape's own allocations belong to the baseline
            idle = proc_status_mib(worker.pid)
            started = time.perf_counter()
            producer_s = await produce(bootstrap, Topology(app_id).events, work.bulk)
            # Every procedure held AND every event applied: a procedure is
            # held from its first event, while its follow-ups may still be queued.
            target = (float(work.procedures), float(work.events))
            progress = (0.0, 0.0)
            last_change = time.monotonic()
            while progress < target:
                await asyncio.sleep(RSS_POLL_S)
                samples = await scrape(session, url)
                now = (
                    samples.get("spinewatch_procedures_held", 0.0),
                    samples.get("spinewatch_events_applied_total", 0.0),
                )
                if now != progress:
                    progress, last_change = now, time.monotonic()
                crashed = worker_error(stderr_path)
                if crashed or time.monotonic() - last_change > STALL_S:
                    CRASHES.first = CRASHES.first or crashed
                    CRASHES.check("worker subprocess")
                    raise BenchmarkFailure(
                        f"worker subprocess stalled at {progress[0]:.0f}/{work.procedures} "
                        f"procedures, {progress[1]:.0f}/{work.events} events"
                    )
            elapsed = time.perf_counter() - started
            peak = proc_status_mib(worker.pid)
            scrape_started = time.perf_counter()
            await scrape(session, url)
            scrape_s = time.perf_counter() - scrape_started
        if progress != target:
            raise BenchmarkFailure(
                f"worker subprocess holds {progress[0]:.0f} procedures / applied "
                f"{progress[1]:.0f} events, expected {work.procedures} / {work.events}"
            )
    finally:
        await stop_subprocess(worker)
        CHILDREN.discard(worker)
    scale = 100_000 / work.procedures
    result = RssResult(
        procedures=work.procedures,
        events=work.events,
        messages=len(work.bulk),
        idle_rss_mib=round(idle["VmRSS"], 1),
        idle_hwm_mib=round(idle["VmHWM"], 1),
        peak_hwm_mib=round(peak["VmHWM"], 1),
        settled_rss_mib=round(peak["VmRSS"], 1),
        peak_growth_per_100k_mib=round((peak["VmHWM"] - idle["VmRSS"]) * scale, 1),
        settled_growth_per_100k_mib=round((peak["VmRSS"] - idle["VmRSS"]) * scale, 1),
        elapsed_s=round(elapsed, 3),
        producer_s=round(producer_s, 3),
        scrape_ms=round(scrape_s * 1000, 1),
    )
    log(
        f"  worker subprocess: idle RSS {result.idle_rss_mib} MiB, peak VmHWM "
        f"{result.peak_hwm_mib} MiB with {work.procedures} procedures "
        f"-> +{result.peak_growth_per_100k_mib} MiB per 100k procedures at peak "
        f"(+{result.settled_growth_per_100k_mib} MiB settled); "
        f"{work.events} events in {elapsed:.2f} s"
    )
    return result


async def stop_subprocess(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 20)
    except TimeoutError:
        log("  worker subprocess ignored SIGTERM for 20 s; killing it")
        process.kill()
        await process.wait()


# --- driver -----------------------------------------------------------------------


@dataclass
class Options:
    procedures: int
    rss_procedures: int
    bulk_size: int
    seed: int
    produce_first: bool
    profile: str | None
    json: bool
    overrides: dict[str, str]  # Settings field -> value, for every spinewatch worker
    bulk_overrides: dict[str, str]  # on top, for the bulk-path workers (cases 4 and 5)
    cases: frozenset[str]
    quix_python: str | None = None
    rounds: int = 1

    def overrides_for(self, path: str) -> dict[str, str]:
        return self.overrides | self.bulk_overrides if path == "bulk" else self.overrides


@dataclass
class Summary:
    cases: list[CaseResult] = field(default_factory=list)
    rss: RssResult | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    rounds: list[PairedRound] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.facts,
            "cases": [case.as_json() for case in self.cases],
            "rss": asdict(self.rss) if self.rss is not None else None,
            "rounds": [r.as_json() for r in self.rounds],
        }


@dataclass(frozen=True)
class PairedRound:
    """The peer and the bulk path, run back to back on the same broker."""

    peer_first: bool
    peer: CaseResult
    bulk: CaseResult

    @property
    def ratio(self) -> float:
        return self.bulk.events_per_s / self.peer.events_per_s

    def as_json(self) -> dict[str, Any]:
        return {
            "peer_first": self.peer_first,
            "peer_events_per_s": round(self.peer.events_per_s),
            "bulk_events_per_s": round(self.bulk.events_per_s),
            "bulk_over_peer": round(self.ratio, 3),
        }


async def run(options: Options, summary: Summary) -> None:
    """Run the selected cases, adding each result to `summary` as it completes."""
    apply_tansu_compat()
    run_id = uuid.uuid4().hex[:8]
    began = time.perf_counter()
    log(f"generating {options.procedures} procedures (seed {options.seed})...")
    work = make_workload(options.procedures, options.seed, options.bulk_size)
    log(
        f"  {work.events} events, {len(work.singles)} single messages, "
        f"{len(work.bulk)} bulk messages ({time.perf_counter() - began:.1f} s)"
    )
    cases = summary.cases
    wanted = options.cases
    summary.facts = {
        "procedures": work.procedures,
        "events": work.events,
        "bulk_size": options.bulk_size,
        "produce": "before" if options.produce_first else "during",
        "partitions": PARTITIONS,
        "settings_overrides": options.overrides,
        "bulk_settings_overrides": options.bulk_overrides,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    with tempfile.TemporaryDirectory(prefix="spinewatch-bench-") as tmp_name:
        tmp = Path(tmp_name)
        async with EmbeddedBroker() as broker:
            bootstrap = broker.bootstrap
            log(f"embedded Tansu broker on {bootstrap}")
            if "raw" in wanted:
                log("1. raw aiokafka")
                cases += await bench_raw(bootstrap, run_id, work)
            if "faust" in wanted:
                log("2. bare faust agent")
                cases.append(await bench_faust(bootstrap, run_id, work, tmp, options.produce_first))
            peer: CaseResult | None = None
            if options.quix_python:
                log("2b. the peer: Quix Streams, a state write per event")
                peer = await bench_quix(options.quix_python, bootstrap, work, tmp)
                cases.append(peer)
            for number, (path, messages) in enumerate(
                (("single", work.singles), ("bulk", work.bulk)), start=3
            ):
                if path not in wanted:
                    continue
                log(f"{number}. spinewatch worker, {path} messages")
                result, settings, totals = await bench_spinewatch(
                    bootstrap,
                    f"bench-{path}-{run_id}",
                    f"spinewatch {path} messages",
                    messages,
                    work=work,
                    tmp=tmp,
                    produce_first=options.produce_first,
                    profile=options.profile == path,
                    overrides=options.overrides_for(path),
                )
                cases.append(result)
                if path == "bulk" and peer is not None:
                    summary.rounds.append(PairedRound(True, peer, result))
                if path == "bulk" and "restore" in wanted:
                    log("   restore: a fresh worker reads the bulk case's changelog")
                    cases.append(await bench_restore(bootstrap, settings, work, totals))
            if summary.rounds and options.quix_python:
                for number in range(2, options.rounds + 1):
                    log(f"6. round {number} of {options.rounds}: the peer and the bulk path")
                    # Odd rounds run the peer first, as the first round did.
                    pair = await paired_round(
                        options,
                        options.quix_python,
                        bootstrap,
                        f"{run_id}-r{number}",
                        work,
                        tmp=tmp,
                        peer_first=number % 2 == 1,
                    )
                    summary.rounds.append(pair)
            if "rss" in wanted and options.rss_procedures:
                log(f"5. worker subprocess RSS, generating {options.rss_procedures} procedures...")
                rss_work = make_workload(
                    options.rss_procedures, options.seed + 1, options.bulk_size
                )
                summary.rss = await bench_rss(
                    bootstrap, run_id, rss_work, tmp, options.overrides_for("bulk")
                )
    summary.facts["total_s"] = round(time.perf_counter() - began, 1)


async def paired_round(
    options: Options,
    quix_python: str,
    bootstrap: str,
    run_id: str,
    work: Workload,
    *,
    tmp: Path,
    peer_first: bool,
) -> PairedRound:
    """The peer and the bulk path once more, in the order given."""

    async def bulk() -> CaseResult:
        result, _, _ = await bench_spinewatch(
            bootstrap,
            f"bench-bulk-{run_id}",
            "spinewatch bulk messages",
            work.bulk,
            work=work,
            tmp=tmp,
            produce_first=options.produce_first,
            profile=False,
            overrides=options.overrides_for("bulk"),
        )
        return result

    if peer_first:
        peer = await bench_quix(quix_python, bootstrap, work, tmp)
        return PairedRound(True, peer, await bulk())
    first = await bulk()
    return PairedRound(False, await bench_quix(quix_python, bootstrap, work, tmp), first)


def rounds_table(rounds: Sequence[PairedRound]) -> str:
    lines = [
        "",
        "the peer and the bulk path back to back (same broker, same events):",
        f"{'round':>5}  {'first':<6} {'quix ev/s':>10} {'to last':>10} {'bulk ev/s':>10} "
        f"{'bulk/quix':>10}",
    ]
    for number, pair in enumerate(rounds, start=1):
        to_last = pair.peer.extra.get("events_per_s_to_last_event", 0.0)
        lines.append(
            f"{number:>5}  {'quix' if pair.peer_first else 'bulk':<6} "
            f"{pair.peer.events_per_s:>10,.0f} {to_last:>10,.0f} "
            f"{pair.bulk.events_per_s:>10,.0f} {pair.ratio:>10.2f}"
        )
    ratios = sorted(pair.ratio for pair in rounds)
    lines.append(
        f"bulk/quix: median {statistics.median(ratios):.2f}, "
        f"lowest {ratios[0]:.2f}, highest {ratios[-1]:.2f} over {len(ratios)} rounds"
    )
    return "\n".join(lines)


def table(cases: Sequence[CaseResult], rss: RssResult | None) -> str:
    lines = [
        f"{'case':<32} {'events':>8} {'msgs':>7} {'elapsed s':>10} {'events/s':>10} "
        f"{'producer s':>11}  window",
        "-" * 120,
    ]
    for case in cases:
        producer = f"{case.producer_s:.2f}" if case.producer_s is not None else "-"
        lines.append(
            f"{case.case:<32} {case.events:>8} {case.messages:>7} {case.elapsed_s:>10.2f} "
            f"{case.events_per_s:>10,.0f} {producer:>11}  {case.window}"
        )
    if rss is not None:
        lines += [
            "",
            f"worker subprocess, {rss.procedures} procedures ({rss.events} events, "
            f"{rss.messages} bulk messages, all held after {rss.elapsed_s:.2f} s):",
            f"  idle VmRSS {rss.idle_rss_mib} MiB (idle VmHWM {rss.idle_hwm_mib} MiB), "
            f"peak VmHWM {rss.peak_hwm_mib} MiB, VmRSS when all held {rss.settled_rss_mib} MiB",
            f"  peak growth per 100k open procedures: {rss.peak_growth_per_100k_mib} MiB "
            f"(settled: {rss.settled_growth_per_100k_mib} MiB)",
            f"  bulk ingest in the subprocess: {rss.events / rss.elapsed_s:,.0f} ev/s "
            f"(scraped every {RSS_POLL_S} s); one /metrics scrape then took {rss.scrape_ms} ms",
        ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--procedures", type=int, default=20_000, help="for cases 1-4")
    parser.add_argument(
        "--rss-procedures", type=int, default=50_000, help="for case 5 (0 skips it)"
    )
    parser.add_argument("--bulk-size", type=int, default=2000, help="events per bulk message")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--produce",
        choices=("before", "during"),
        default="before",
        help="produce each case's messages before its consumer starts, or after it is ready",
    )
    parser.add_argument(
        "--profile",
        choices=("single", "bulk"),
        help="cProfile the in-process worker during that case (slows it down)",
    )
    parser.add_argument(
        "--quix-python",
        metavar="PATH",
        help="an interpreter with quixstreams installed: also run the peer (benchmarks/README.md)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --quix-python and the bulk case: rounds of the peer and the bulk path"
        " back to back, alternating which runs first (default 1)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated subset of {','.join(CASES)} (default: all)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a spinewatch Settings field for every worker, e.g. ingest_batch_max=4000",
    )
    parser.add_argument(
        "--bulk-set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a Settings field for the bulk-path workers only, e.g. ingest_batch_max=3",
    )
    args = parser.parse_args(argv)
    if not set(args.cases.split(",")) <= set(CASES):
        parser.error(f"--cases: choose from {','.join(CASES)}")
    if args.procedures < 10 or args.bulk_size < 1 or args.rss_procedures < 0:
        parser.error("need --procedures >= 10, --bulk-size >= 1, --rss-procedures >= 0")
    if args.rounds < 1 or (args.rounds > 1 and not args.quix_python):
        parser.error("--rounds: at least 1, and more than 1 only with --quix-python")
    overrides: dict[str, str] = {}
    bulk_overrides: dict[str, str] = {}
    for items, into in ((args.set, overrides), (args.bulk_set, bulk_overrides)):
        for item in items:
            name, sep, value = item.partition("=")
            if not sep or name not in Settings.model_fields:
                parser.error(f"{item!r}: expected FIELD=VALUE with a Settings field")
            into[name] = value
    return Options(
        procedures=args.procedures,
        rss_procedures=args.rss_procedures,
        bulk_size=args.bulk_size,
        seed=args.seed,
        produce_first=args.produce == "before",
        profile=args.profile,
        json=args.json,
        overrides=overrides,
        bulk_overrides=bulk_overrides,
        cases=frozenset(args.cases.split(",")),
        quix_python=args.quix_python,
        rounds=args.rounds,
    )


def shut_down(loop: asyncio.AbstractEventLoop, timeout_s: float = 10.0) -> None:
    """The end of `asyncio.run`, with a bound on how long leftover tasks may take."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=timeout_s))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger().addHandler(CRASHES)
    # The same silencing as `spinewatch worker`: noise under load on Tansu.
    logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)
    logging.getLogger("mode.timers").setLevel(logging.ERROR)
    loop = asyncio.new_event_loop()
    summary = Summary()
    try:
        loop.run_until_complete(run(options, summary))
    except (Exception, KeyboardInterrupt) as exc:
        if summary.cases or summary.rss:
            log("\ncompleted before the failure:\n" + table(summary.cases, summary.rss))
        if isinstance(exc, BenchmarkFailure):
            log(f"\nBENCHMARK FAILED: {exc}")
        else:
            traceback.print_exc()
            log("\nBENCHMARK FAILED (see the traceback above)")
        # The broker dies with this process (PR_SET_PDEATHSIG); a worker
        # subprocess may not have been stopped yet. An abandoned in-process
        # faust app keeps a non-daemon consumer thread that would block the
        # interpreter's exit forever, hence the hard exit.
        for child in CHILDREN:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        sys.stdout.flush()
        os._exit(130 if isinstance(exc, KeyboardInterrupt) else 1)
    shut_down(loop)
    text = table(summary.cases, summary.rss)
    if summary.rounds:
        text += "\n" + rounds_table(summary.rounds)
    if options.json:
        log(text)
        print(json.dumps(summary.as_json(), indent=2))
    else:
        print(text)
        print(f"\ntotal {summary.facts['total_s']} s on {summary.facts['cpus']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
