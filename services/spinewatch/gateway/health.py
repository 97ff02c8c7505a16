"""/healthz and /readyz of the gateway.

`/healthz` (liveness): the event loop runs the supervised loops (their
heartbeats are fresh) and the producer is not wedged (writes failing while
the broker answers). Red past `give_up_after_s`, the process exits 70 for
a restart.

`/readyz` (readiness): all of that, and, asked at that moment, Redis
answers a PING and the broker a metadata request naming the events topic,
each within `readiness_timeout_s`. The answer names the check that failed.
Both are unauthenticated, like every probe endpoint: they hold aggregate
states only, no source, site or event.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from spinewatch.gateway.producer import EventProducer
from spinewatch.runtime.health import Check, report
from spinewatch.runtime.supervisor import Heartbeat, Supervisor

HEARTBEAT_S = 0.5


class GatewayHealth:
    def __init__(
        self, supervisor: Supervisor, producer: EventProducer, redis: Redis, timeout_s: float
    ) -> None:
        self.supervisor = supervisor
        self.producer = producer
        self.redis = redis
        self.timeout_s = timeout_s

    async def live(self) -> tuple[int, dict[str, Any]]:
        return report(self.supervisor.checks(), readiness=False)

    async def ready(self) -> tuple[int, dict[str, Any]]:
        redis, broker = await asyncio.gather(self._redis(), self.producer.probe())
        return report([*self.supervisor.checks(), redis, broker], readiness=True)

    async def _redis(self) -> Check:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.redis.ping()
        except TimeoutError:
            return Check("redis", False, "no answer to PING within the timeout", False)
        except Exception as exc:
            return Check("redis", False, f"PING failed ({type(exc).__name__})", False)
        return Check("redis", True)


async def heartbeat(beat: Heartbeat) -> None:
    """A loop that only beats: stale when the event loop stops making progress."""
    while True:
        beat.beat()
        await asyncio.sleep(HEARTBEAT_S)
