"""What every request handler needs: credentials, intake, rate limits, metrics, health."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from spinewatch.gateway.auth import Refusal, SourceGrant
from spinewatch.gateway.bodies import Refused, unauthenticated
from spinewatch.gateway.health import GatewayHealth
from spinewatch.gateway.intake import Intake, Outcome, Result
from spinewatch.gateway.metrics import GatewayMetrics
from spinewatch.gateway.ratelimit import SourceRateLimits
from spinewatch.gateway.settings import GatewaySettings
from spinewatch.runtime.credentials import CredentialStore, bearer_token


class Unavailable(Exception):
    """A dependency of every request (Redis) is away: 503, retry later."""


@dataclass
class Gateway:
    """Built and closed by `process.running_gateway`."""

    settings: GatewaySettings
    credentials: CredentialStore[SourceGrant]
    intake: Intake
    limits: SourceRateLimits
    metrics: GatewayMetrics
    health: GatewayHealth

    def grant(self, request: Request) -> SourceGrant:
        """The grant of the request's bearer token, or `Refused` (401)."""
        grant = self.credentials.authenticate(bearer_token(request.headers.get("authorization")))
        if grant is None:
            raise unauthenticated()
        return grant

    async def spend(self, grant: SourceGrant, cost: int) -> None:
        """Charge the source's rate budget, or `Refused` (429); `Unavailable` without Redis."""
        try:
            verdict = await self.limits.hit(grant, cost)
        except Exception as exc:
            reason = f"the rate limit store (Redis) is unavailable ({type(exc).__name__})"
            raise Unavailable(reason) from None
        if not verdict.allowed:
            raise Refused(
                429,
                Refusal.RATE_LIMITED,
                "this source's rate budget is spent; retry after the Retry-After seconds",
                {"Retry-After": str(verdict.retry_after_s)},
            )

    def retry_headers(self, results: list[Result]) -> dict[str, str]:
        if any(r.outcome is Outcome.RETRY for r in results):
            return {"Retry-After": str(self.settings.retry_after_s)}
        return {}
