"""The gateway's Prometheus metrics, and the ASGI layer that measures every request.

Labels are bounded: `route` is one of the gateway's own paths (anything
else is `other`, so a scanner probing random URLs cannot grow the series),
`status` an HTTP status, `outcome` one of six, and `reason` a refusal code
(`auth.Refusal`) or a contract error type (pydantic's finite set of error
types and the registry's own codes). No label holds a source, a site, an
id or any text from a request.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spinewatch.runtime.log_repeats import RepeatLimit

log = logging.getLogger(__name__)
# A fault that hits every request is one line per 10 s, with a count.
log.addFilter(RepeatLimit(loggers=(__name__,)))

# nginx's code for a request whose client closed the connection first.
CLIENT_GONE = 499
OUTCOMES = ("accepted", "duplicate", "conflict", "rejected", "forbidden", "retry")
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, routes: Iterable[str]) -> None:
        self.registry = registry
        self.routes = frozenset(routes)
        self.requests = Counter(
            "spinewatch_gateway_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=registry,
        )
        self.events = Counter(
            "spinewatch_gateway_events",
            "Events answered, by outcome (accepted only after the broker's acknowledgement).",
            ["outcome"],
            registry=registry,
        )
        self.rejections = Counter(
            "spinewatch_gateway_rejections",
            "Refused requests and events, by reason (a refusal code or a contract error type).",
            ["reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "spinewatch_gateway_request_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "spinewatch_gateway_in_flight_requests",
            "Requests being answered right now.",
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.events.labels(outcome)  # exported at 0 from the start

    def route(self, path: str) -> str:
        return path if path in self.routes else "other"

    def outcome(self, outcome: str, count: int = 1) -> None:
        if count:
            self.events.labels(outcome).inc(count)

    def rejected(self, reasons: Iterable[str]) -> None:
        for reason in reasons:
            self.rejections.labels(reason).inc()


class MeasuredApp:
    """ASGI middleware: counts, times and guards every HTTP request.

    An exception escaping the application is answered 500 here, with one
    log line naming its type and where it was raised (never its text,
    which may quote input), instead of a traceback per request.
    """

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.metrics.route(scope["path"])
        status = 500
        started = False

        async def sending(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        began = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, sending)
        except ClientDisconnect:
            status = CLIENT_GONE  # the sender hung up mid-body: nothing to answer, nothing wrong
        except Exception as exc:
            log.error("gateway: %s %s failed: %s at %s", scope["method"], route,
                      type(exc).__name__, _origin(exc))  # fmt: skip
            status = 500
            if not started:
                await _internal_error(send)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.latency.labels(route).observe(time.perf_counter() - began)
            self.metrics.requests.labels(route, str(status)).inc()


async def _internal_error(send: Send) -> None:
    body = json.dumps({"status": "error", "reason": "internal error; logged"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _origin(exc: BaseException) -> str:
    tb = exc.__traceback__
    if tb is None:
        return "?"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
