"""The demo's alerting part: what on-call staff receive, a line per transition.

A throwaway redis-server holds the alert state; the alerting service reads
the drift topic the demo's worker wrote (verifying each message with the
run's signing key) and delivers to a webhook served here on loopback
(standing in for a pager or a Slack channel) and to the audit topic. The
demo prints each webhook message as it arrives: the drifting site's alert
fired once and, once its chart is back in control, resolved; every
sentinel event paged on its own.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from spinewatch.alerting.process import running_alerting
from spinewatch.alerting.service import AlertingService
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.demo.drift import DRIFTING_SITE, LEAKAGE
from spinewatch.demo.investigation import ON_CALL, QUALITY_LEAD, DemoUsers, walk_investigation
from spinewatch.devservers.redis import EmbeddedRedis
from spinewatch.devservers.tansu import free_port
from spinewatch.domain.alerts.model import fingerprint
from spinewatch.engine.settings import Settings
from spinewatch.errors import RedisUnavailable
from spinewatch.runtime.credentials import issue_token

QUIET_S = 2.0  # no new message and an empty outbox for this long: all delivered
TIMEOUT_S = 45.0


class _Webhook:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[dict[str, Any]] = []
        self.last_at = time.monotonic()

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        self.last_at = time.monotonic()
        return web.Response(status=200)


async def print_alerts(brokers: str, worker: Settings, out: TextIO) -> None:
    with tempfile.TemporaryDirectory(prefix="spinewatch-redis-") as workdir:
        redis = EmbeddedRedis(Path(workdir))
        try:
            await asyncio.to_thread(redis.start)
        except RedisUnavailable as exc:
            print(f"\nAlerting skipped: {exc}", file=out)
            return
        try:
            credentials, users = _credentials(Path(workdir))
            await _run(brokers, worker, redis.url, credentials=credentials, users=users, out=out)
        finally:
            redis.stop()


def _credentials(workdir: Path) -> tuple[Path, DemoUsers]:
    """Two users for this run only: the on-call user and the quality lead."""
    path = workdir / "alerting-credentials.toml"
    tokens = {}
    with path.open("w") as file:
        for user in (ON_CALL, QUALITY_LEAD):
            issued = issue_token()
            tokens[user] = issued.token
            file.write(
                f'[[token]]\nid = "{issued.token_id}"\nsha256 = "{issued.sha256}"\n'
                f'user = "{user}"\n'
            )
    return path, DemoUsers((ON_CALL, tokens[ON_CALL]), (QUALITY_LEAD, tokens[QUALITY_LEAD]))


async def _run(
    brokers: str,
    worker: Settings,
    redis_url: str,
    *,
    credentials: Path,
    users: DemoUsers,
    out: TextIO,
) -> None:
    app_id = worker.app_id
    webhook = _Webhook()
    app = web.Application()
    app.router.add_post("/hook", webhook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", webhook.port).start()
    settings = AlertingSettings(
        kafka_brokers=brokers,
        app_id=app_id,
        # The worker's key and Kafka security: the same deployment.
        signing_key=worker.signing_key,
        credentials_file=credentials,
        **worker.kafka_security.model_dump(),
        redis_url=redis_url,
        key_prefix=app_id,
        webhook_urls=(f"http://127.0.0.1:{webhook.port}/hook",),
        http_port=0,
        poll_interval_s=0.1,
    )
    try:
        async with running_alerting(settings) as running:
            service, url = running.service, running.url
            print(f"\nAlerting: Redis {redis_url}, service {url}; webhook messages:", file=out)
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:
                quiet = time.monotonic() - webhook.last_at > QUIET_S
                if webhook.received and quiet and await service.store.pending_deliveries() == 0:
                    break
                await asyncio.sleep(0.1)
            _print_messages(webhook.received, out)
            alerts = await service.store.alerts()
            drifting = fingerprint(DRIFTING_SITE, LEAKAGE, "worse")
            if any(alert.fingerprint == drifting for alert in alerts):
                await walk_investigation(url, drifting, users, out)
                # Its steps on the audit topic before the report reads it.
                await _until_delivered(service)
            firing = sum(a.status == "firing" for a in alerts)
            print(
                f"  {len(webhook.received)} messages; {len(alerts)} alerts in Redis, "
                f"{firing} still firing (sentinels stay until acknowledged or 24 h)",
                file=out,
            )
    finally:
        await runner.cleanup()


async def _until_delivered(service: AlertingService) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if not await service.store.pending_deliveries():
            break
        await asyncio.sleep(0.1)


SENTINEL_LINES_SHOWN = 3


def _print_messages(received: list[dict[str, Any]], out: TextIO) -> None:
    """Drift alerts in full; sentinel pages, one per case, the first few and a count."""
    sentinels = [m for m in received if m["alert"]["labels"].get("sentinel_id")]
    for message in received:
        if message not in sentinels:
            print("  " + message["text"].splitlines()[0], file=out)
    for message in sentinels[:SENTINEL_LINES_SHOWN]:
        print("  " + message["text"].splitlines()[0], file=out)
    if len(sentinels) > SENTINEL_LINES_SHOWN:
        by_site = Counter(m["alert"]["labels"]["site"] for m in sentinels)
        sites = ", ".join(f"{site} {n}" for site, n in sorted(by_site.items()))
        print(
            f"  ... {len(sentinels) - SENTINEL_LINES_SHOWN} more sentinel pages, one per case "
            f"({len(sentinels)} in all: {sites})",
            file=out,
        )
