"""Per-source rate limits shared by every gateway replica (a moving window in Redis).

The budget is events per minute per source (the credential's
`rate_per_minute`, else the gateway's default). A request costs what it
asks the broker and the engine to take: one for a single event, its item
count for a batch, capped at the whole budget so that a batch larger than
a source's budget is admitted once the window is empty instead of never.
A moving window (limits' `MovingWindowRateLimiter`) has no boundary at
which twice the budget passes, as a fixed window has.

An exhausted budget answers 429 with `Retry-After`: the seconds until the
oldest hit in the window expires (at least 1), the earliest moment a
retry can pass.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from spinewatch.gateway.auth import SourceGrant


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0


class SourceRateLimits:
    def __init__(
        self, redis_url: str, prefix: str, default_per_minute: int, timeout_s: float
    ) -> None:
        self.default_per_minute = default_per_minute
        self.storage = RedisStorage(
            f"async+{redis_url}",
            implementation="redispy",
            key_prefix=f"{prefix}:ratelimit",
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def hit(self, grant: SourceGrant, cost: int) -> Verdict:
        """Spend `cost` of the source's budget, or say when it can; raises if Redis does."""
        item = RateLimitItemPerMinute(grant.rate_per_minute or self.default_per_minute)
        cost = max(1, min(cost, item.amount))
        if await self.limiter.hit(item, grant.source, cost=cost):
            return Verdict(True)
        stats = await self.limiter.get_window_stats(item, grant.source)
        return Verdict(False, max(1, math.ceil(stats.reset_time - time.time())))

    async def close(self) -> None:
        client = getattr(self.storage.bridge, "storage", None)
        if client is not None:
            await client.aclose()
