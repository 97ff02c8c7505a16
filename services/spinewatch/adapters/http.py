"""The worker's own HTTP endpoint: /metrics, /healthz and /readyz.

Served by aiohttp on the worker's event loop rather than by
prometheus-client's threaded server: a scrape then reads the engine's
totals between two stream steps, never halfway through an update, with no
locks. faust's own web server stays off (it would serve /table endpoints
that expose patient state).

A scrape renders only the registry it was given: counters, gauges and
health checks, whose cost does not grow with the procedures held. Metrics
that do (the cohorts, charts and follow-ups) are rendered elsewhere into
`rendered.body` (`engine/metric_renderer.py`) and served as they are.

/healthz answers 200 while every liveness check passes and 503 otherwise;
/readyz the same over every check (see `spinewatch.runtime.health`). Both list the
checks with the reason of each failing one. A scrape whose collectors
raise answers 500 with the exception's type only, logs one line, and turns
the `metrics` check red until a scrape succeeds again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from spinewatch.runtime.health import Check, report

log = logging.getLogger(__name__)


class Rendered(Protocol):
    """Exposition text rendered off the scrape, appended to every answer."""

    body: bytes


class MetricsServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        checks: Callable[[], list[Check]] = list,
        extra: Callable[[], dict[str, Any]] = dict,
        *,
        rendered: Rendered | None = None,
    ) -> None:
        self._registry = registry
        self.rendered = rendered
        self.checks = checks
        self.extra = extra
        self.host = host
        self.port = port
        self.scrape_error = ""
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # report the port the OS picked
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def metrics_check(self) -> list[Check]:
        return [Check("metrics", not self.scrape_error, self.scrape_error, liveness=False)]

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            self.checks()  # spinewatch_health_check_ok as of this scrape
            body = generate_latest(self._registry)
            if self.rendered is not None:
                # Its families are disjoint from the registry's: one valid page.
                body += self.rendered.body
        except Exception as exc:
            self.scrape_error = f"a scrape failed: {type(exc).__name__}"
            log.error("/metrics failed: %s", type(exc).__name__)
            return web.Response(status=500, text=self.scrape_error)
        self.scrape_error = ""
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return self._answer(readiness=False)

    async def _readyz(self, request: web.Request) -> web.Response:
        return self._answer(readiness=True)

    def _answer(self, *, readiness: bool) -> web.Response:
        status, body = report(self.checks(), readiness=readiness, extra=self.extra())
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")
