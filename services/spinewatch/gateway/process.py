"""The gateway's process: its clients and loops, and uvicorn serving the app on this loop.

`running_gateway` opens Redis, the rate limiter and the producer (which
connects in a supervised loop, see `producer`), binds the listening socket
itself (port 0 picks a free one, reported in `RunningGateway.url`), and
serves until the block ends. Leaving the block is a graceful shutdown:
uvicorn stops accepting, lets requests in flight finish (each waits at
most for its broker acknowledgement), then the clients close. Signals are
the entry point's business (`main`), not uvicorn's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass

import uvicorn
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from spinewatch.gateway.app import ROUTES, create_app
from spinewatch.gateway.auth import load_credentials
from spinewatch.gateway.health import GatewayHealth, heartbeat
from spinewatch.gateway.idempotency import IdempotencyStore
from spinewatch.gateway.intake import Intake
from spinewatch.gateway.metrics import GatewayMetrics
from spinewatch.gateway.producer import EventProducer
from spinewatch.gateway.ratelimit import SourceRateLimits
from spinewatch.gateway.settings import GatewaySettings
from spinewatch.gateway.state import Gateway
from spinewatch.runtime.supervisor import Supervisor

log = logging.getLogger(__name__)

# Longest a shutdown waits for requests in flight (each is bounded by the
# produce timeout), before they are cancelled.
_GRACE_MARGIN_S = 5.0


@dataclass
class RunningGateway:
    url: str
    gateway: Gateway
    supervisor: Supervisor
    gave_up: asyncio.Event  # set when the supervisor gave up: exit non-zero


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the entry point handles SIGTERM/SIGINT (and tests have none)


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[RunningGateway]:
    """Serve the gateway on the current loop until the block ends."""
    credentials = load_credentials(settings.credentials_file)
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, ROUTES)
    gave_up = asyncio.Event()
    supervisor = Supervisor(
        "gateway",
        registry,
        give_up_after_s=settings.give_up_after_s,
        on_give_up=lambda _reason: gave_up.set(),
    )
    redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
    )
    limits = SourceRateLimits(
        settings.redis_url, settings.key_prefix, settings.rate_per_minute, settings.redis_timeout_s
    )
    producer = EventProducer(settings)
    store = IdempotencyStore(
        redis, settings.key_prefix, settings.idempotency_retention_s, settings.pending_ms
    )
    health = GatewayHealth(supervisor, producer, redis, settings.readiness_timeout_s)
    gateway = Gateway(
        settings, credentials, Intake(producer, store, metrics), limits, metrics, health
    )
    supervisor.spawn("heartbeat", heartbeat, stale_after_s=5.0)
    # It beats at least every few seconds (a probe or a connection attempt).
    supervisor.spawn("producer", producer.run, stale_after_s=30 + 2 * settings.readiness_timeout_s)
    supervisor.add_checks(lambda: [producer.liveness()])
    sock = _listening_socket(settings.host, settings.port)
    server = _Server(
        uvicorn.Config(
            create_app(gateway),
            lifespan="off",
            log_config=None,
            access_log=False,  # paths and queries are no business of the log
            server_header=False,
            timeout_graceful_shutdown=int(settings.produce_timeout_s + _GRACE_MARGIN_S),
        )
    )
    serving: asyncio.Task[None] | None = None
    try:
        await supervisor.start()
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="gateway:http")
        while not server.started:
            if serving.done():
                serving.result()  # raises what ended it
                raise RuntimeError("the HTTP server ended during start-up")
            await asyncio.sleep(0.02)
        host, port = sock.getsockname()[:2]
        yield RunningGateway(f"http://{host}:{port}", gateway, supervisor, gave_up)
    finally:
        if serving is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await serving
        sock.close()
        await supervisor.stop()
        closers: list[Callable[[], Awaitable[object]]] = [
            producer.close,
            limits.close,
            redis.aclose,
        ]
        for close in closers:
            with contextlib.suppress(Exception):
                await close()


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # uvicorn never sets TCP_NODELAY, and h11 writes a response's head
        # and body as two segments: on a kept-alive connection Nagle holds
        # the body until the client's delayed ACK, 40 ms later. Measured
        # with benchmarks/gateway.py, one request in flight: p50 48 ms
        # without, see README with. Accepted sockets inherit it (Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
