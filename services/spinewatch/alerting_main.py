"""`spinewatch alerting`: run one alerting process until SIGTERM or SIGINT.

Settings come from `SPINEWATCH_ALERTING_*`; several processes may run
against one Redis (they page once between them). `--check` asks a running
process's /healthz and exits 0 when it answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import urllib.error
import urllib.request

from pydantic import ValidationError

from spinewatch.alerting import running_alerting
from spinewatch.alerting_settings import AlertingSettings


async def serve(settings: AlertingSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_alerting(settings) as (_, url):
        print(f"spinewatch alerting {settings.app_id}: {url} (GET /alerts)", flush=True)
        await stop.wait()
    return 0


def check(settings: AlertingSettings, timeout_s: float = 5.0) -> int:
    url = f"http://{settings.http_host}:{settings.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            print(json.dumps(json.loads(response.read())))
            return 0
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"spinewatch alerting not healthy at {url}: {exc}", file=sys.stderr)
        return 1


def main(check_only: bool) -> int:
    try:
        # Every field, the brokers included, comes from the environment.
        settings = AlertingSettings()
    except ValidationError as exc:
        print(f"spinewatch alerting: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if check_only:
        return check(settings)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(serve(settings))
