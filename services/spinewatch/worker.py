"""`spinewatch worker`: run one outcomes worker until SIGTERM or SIGINT.

`spinewatch worker --check` asks a running worker's /healthz instead and
exits 0 when it answers (for container health checks and scripts).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import urllib.error
import urllib.request

from spinewatch.bootstrap import kafka_brokers, running_worker
from spinewatch.settings import Settings


def configure_logging(settings: Settings) -> None:
    # Events are never logged, only counts and partitions: no patient or
    # procedure identifiers can reach a log line.
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Noise from faust under load on a single-record-batch broker.
    logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)
    logging.getLogger("mode.timers").setLevel(logging.ERROR)


async def serve(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with kafka_brokers(settings) as brokers, running_worker(settings, brokers) as worker:
        print(
            f"spinewatch worker {settings.app_id}: brokers {brokers}, "
            f"metrics {worker.metrics.url}/metrics",
            flush=True,
        )
        await stop.wait()
    return 0


def check(settings: Settings, timeout_s: float = 5.0) -> int:
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            print(json.dumps(json.loads(response.read())))
            return 0
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"spinewatch worker not healthy at {url}: {exc}", file=sys.stderr)
        return 1


def main(check_only: bool) -> int:
    settings = Settings()
    if check_only:
        return check(settings)
    configure_logging(settings)
    return asyncio.run(serve(settings))
