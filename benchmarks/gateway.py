"""Throughput and latency of the HTTP gateway, next to a direct Kafka produce.

    .venv/bin/python benchmarks/gateway.py [--events N] [--concurrency C] [--batch B] [--json]

One run starts ONE embedded Tansu broker and ONE redis-server, and runs
`spinewatch gateway` as its own OS process (a real socket, real HTTP; the
client is this process, as a hospital's interface engine would be another
process). Every case writes the same kind of events (fresh synthetic ones
per case, so the gateway never answers "duplicate"), with acks=all:

1. direct produce, single: aiokafka, `C` sends in flight, each awaited
   until the broker acknowledged it; latency per event;
2. gateway, single: `POST /v1/events`, `C` requests in flight; latency per
   request (= per event), from sending to the 202;
3. direct produce, batches: `B` events sent, then all acknowledgements
   awaited; `C` batches in flight; latency per batch;
4. gateway, batches: `POST /v1/events/batch` of `B` events, `C` in
   flight; latency per batch, from sending to the 200 with every result.

Each gateway case checks that every answer says "accepted" and fails loudly
otherwise. The gateway's cost per event is validation (`parse_event`), the
idempotency round trips to Redis (SET NX, then SET), the rate-limit check,
the canonical re-encoding and HTTP itself; a direct produce has none of
those guarantees (no authentication, no validation, no duplicate answer).
Nothing is written to the work tree.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from spinewatch.adapters.kafka_admin import ensure_topics
from spinewatch.adapters.kafka_clients import started
from spinewatch.contracts.topics import DEFAULT_PARTITIONS, Topology
from spinewatch.demo.synthetic.cohort import default_sites, encode, generate_cohort
from spinewatch.devservers.redis import EmbeddedRedis
from spinewatch.devservers.tansu import EmbeddedBroker, free_port
from spinewatch.runtime.credentials import issue_token

SOURCE = "bench-ris"
READY_S = 60.0


@dataclass(frozen=True)
class Result:
    case: str
    events: int
    seconds: float
    events_per_s: float
    unit: str  # what one latency sample is: an event or a batch
    p50_ms: float
    p99_ms: float


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def _result(case: str, events: int, seconds: float, unit: str, lat: list[float]) -> Result:
    return Result(
        case, events, seconds, events / seconds, unit, _percentile(lat, 0.5), _percentile(lat, 0.99)
    )


def fresh_events(seed: int, count: int) -> list[dict[str, Any]]:
    """`count` distinct valid events of a synthetic cohort (procedures first, by time)."""
    cohort = generate_cohort(
        seed, default_sites(max(10, count // 3)), duplicate_share=0, malformed=0, retractions=0,
        late_followups=0, early_followups=0,
    )  # fmt: skip
    # One sending system, as a hospital group's interface engine would be.
    events = [dict(e) | {"source": SOURCE} for e in cohort.events]
    if len(events) < count:
        raise SystemExit(f"cohort too small: {len(events)} < {count}")
    return events[:count]


async def _pooled(jobs: Sequence[Callable[[], Awaitable[None]]], concurrency: int) -> float:
    """Run the jobs with `concurrency` in flight; the wall time."""
    queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        while not queue.empty():
            await queue.get_nowait()()

    started_at = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started_at


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def direct_single(producer: AIOKafkaProducer, topic: str, events: list[dict[str, Any]],
                        concurrency: int) -> Result:  # fmt: skip
    latencies: list[float] = []

    def job(event: dict[str, Any]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            t0 = time.perf_counter()
            future = await producer.send(topic, encode(event), key=event["procedure_id"].encode())
            await future
            latencies.append(time.perf_counter() - t0)

        return run

    seconds = await _pooled([job(e) for e in events], concurrency)
    return _result("direct produce, single", len(events), seconds, "event", latencies)


async def direct_batches(producer: AIOKafkaProducer, topic: str, events: list[dict[str, Any]],
                         concurrency: int, batch: int) -> Result:  # fmt: skip
    latencies: list[float] = []

    def job(chunk: list[dict[str, Any]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            t0 = time.perf_counter()
            futures = [
                await producer.send(topic, encode(e), key=e["procedure_id"].encode()) for e in chunk
            ]
            await asyncio.gather(*futures)
            latencies.append(time.perf_counter() - t0)

        return run

    seconds = await _pooled([job(c) for c in _chunks(events, batch)], concurrency)
    return _result(f"direct produce, batches of {batch}", len(events), seconds, "batch", latencies)


async def gateway_single(session: aiohttp.ClientSession, url: str, token: str,
                         events: list[dict[str, Any]], concurrency: int) -> Result:  # fmt: skip
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def job(event: dict[str, Any]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            t0 = time.perf_counter()
            async with session.post(f"{url}/v1/events", data=encode(event), headers=headers) as r:
                answer = await r.json()
                if r.status != 202 or answer.get("status") != "accepted":
                    raise SystemExit(f"gateway answered {r.status}: {answer}")
            latencies.append(time.perf_counter() - t0)

        return run

    seconds = await _pooled([job(e) for e in events], concurrency)
    return _result("gateway POST /v1/events", len(events), seconds, "event", latencies)


async def gateway_batches(session: aiohttp.ClientSession, url: str, token: str,  # noqa: PLR0917
                          events: list[dict[str, Any]], concurrency: int,
                          batch: int) -> Result:  # fmt: skip
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def job(chunk: list[dict[str, Any]]) -> Callable[[], Awaitable[None]]:
        body = json.dumps(chunk, separators=(",", ":")).encode()

        async def run() -> None:
            t0 = time.perf_counter()
            async with session.post(f"{url}/v1/events/batch", data=body, headers=headers) as r:
                answer = await r.json()
                if r.status != 200 or answer.get("accepted") != len(chunk):
                    counts = {k: v for k, v in answer.items() if k != "results"}
                    raise SystemExit(f"gateway answered {r.status}: {counts}")
            latencies.append(time.perf_counter() - t0)

        return run

    seconds = await _pooled([job(c) for c in _chunks(events, batch)], concurrency)
    return _result(
        f"gateway POST /v1/events/batch ({batch})", len(events), seconds, "batch", latencies
    )


@contextlib.contextmanager
def gateway_process(workdir: Path, bootstrap: str, redis_url: str, app_id: str,
                    sites: Sequence[str]) -> Iterator[tuple[str, str]]:  # fmt: skip
    """`spinewatch gateway` as an OS process; yields (url, token)."""
    issued = issue_token()
    credentials = workdir / "credentials.toml"
    credentials.write_text(
        f'[[token]]\nid = "{issued.token_id}"\nsha256 = "{issued.sha256}"\n'
        f"source = {json.dumps(SOURCE)}\nsites = {json.dumps(list(sites))}\n"
        # The benchmark measures capacity, not the per-source budget.
        "rate_per_minute = 1000000\n",
        encoding="utf-8",
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINEWATCH_")}
    env |= {
        "SPINEWATCH_GATEWAY_KAFKA_BROKERS": bootstrap,
        "SPINEWATCH_GATEWAY_APP_ID": app_id,
        "SPINEWATCH_GATEWAY_REDIS_URL": redis_url,
        "SPINEWATCH_GATEWAY_CREDENTIALS_FILE": str(credentials),
        "SPINEWATCH_GATEWAY_PORT": str(port),
        "SPINEWATCH_GATEWAY_LOG_LEVEL": "warning",
    }
    log = (workdir / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "spinewatch", "gateway"], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, workdir / "gateway.log")
        yield url, issued.token
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gateway exited {process.returncode}:\n{log.read_text()}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer,  # noqa: S310
        ):
            if answer.status == 200:
                return
        time.sleep(0.2)  # polling a subprocess's readiness, not hiding a race
    raise SystemExit(f"gateway not ready within {READY_S:.0f} s:\n{log.read_text()}")


@contextlib.asynccontextmanager
async def infrastructure(workdir: Path) -> AsyncIterator[tuple[str, str]]:
    redis = EmbeddedRedis(workdir / "redis")
    (workdir / "redis").mkdir()
    async with EmbeddedBroker() as broker:
        redis.start()
        try:
            yield broker.bootstrap, redis.url
        finally:
            redis.stop()


async def run(args: argparse.Namespace) -> list[Result]:
    n, c, b = args.events, args.concurrency, args.batch
    pools = [fresh_events(seed, n) for seed in range(101, 105)]
    sites = sorted({e["site_id"] for pool in pools for e in pool})
    app_id = f"bench{uuid.uuid4().hex[:8]}"
    topic = Topology(app_id, DEFAULT_PARTITIONS).events
    with tempfile.TemporaryDirectory(prefix="spinewatch-gw-bench-") as tmp:
        workdir = Path(tmp)
        async with infrastructure(workdir) as (bootstrap, redis_url):
            await ensure_topics(bootstrap, [topic], DEFAULT_PARTITIONS)
            timeout = aiohttp.ClientTimeout(total=120)
            with gateway_process(workdir, bootstrap, redis_url, app_id, sites) as (url, token):
                async with (
                    started(AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")) as producer,
                    aiohttp.ClientSession(
                        timeout=timeout, connector=aiohttp.TCPConnector(limit=c)
                    ) as session,
                ):
                    # Warm-up: connections, the gateway's first requests.
                    await gateway_single(session, url, token, fresh_events(99, 50), c)
                    return [
                        await direct_single(producer, topic, pools[0], c),
                        await gateway_single(session, url, token, pools[1], c),
                        await direct_batches(producer, topic, pools[2], c, b),
                        await gateway_batches(session, url, token, pools[3], c, b),
                    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=4000, help="events per case")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--batch", type=int, default=200, help="events per batch")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                          "results": [asdict(r) for r in results]}))  # fmt: skip
        return 0
    print(f"{args.events} events per case, {args.concurrency} in flight, acks=all, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'case':42} {'events/s':>9} {'per':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(f"{r.case:42} {r.events_per_s:9.0f} {r.unit:>6} {r.p50_ms:8.1f} {r.p99_ms:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
