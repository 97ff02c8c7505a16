"""Look-back lists: the cases behind a signal, kept for the investigation, served on request.

The worker publishes one `drift.lookback` per signal on `{app}-lookback`
(`contracts/lookback.py`), signed like the drift topic: the consumer
verifies it before it gets here (`alerting/process.py`; a forged one is
dead-lettered and counted in
`spinewatch_lookback_messages_rejected_total{reason}`). Each valid list
is kept in Redis under its alert's fingerprint and signal id, the newest
`lookback_keep_signals` per alert, for `lookback_ttl_days` after the last
one arrived (`adapters/redis_investigations.py`).

`GET /alerts/{fp}/cases` returns the list of the alert's latest signal,
or of `?signal_id=`: Queensland's "look back from the flag to the
patients", as pseudonymous procedure ids and clinical dates. Neither the
lists nor any id in them is ever logged (an invalid message logs its
fields' errors only).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from spinewatch.adapters.message_signing import SIGNATURE_FAULTS
from spinewatch.adapters.redis_alerts import RedisAlertStore
from spinewatch.adapters.redis_investigations import RedisInvestigations
from spinewatch.contracts.lookback import DriftLookback
from spinewatch.domain.alerts.model import fingerprint as chart_fingerprint
from spinewatch.domain.alerts.model import has_chart
from spinewatch.runtime.failures import export_at_zero

log = logging.getLogger(__name__)


class LookbackKeeper:
    """Records each verified `drift.lookback` in Redis, and serves it."""

    def __init__(
        self,
        store: RedisAlertStore,
        steps: RedisInvestigations,
        registry: CollectorRegistry,
        clock: Callable[[], datetime],
        *,
        keep: int,
        ttl_s: int,
    ) -> None:
        self.store = store
        self.steps = steps
        self.clock = clock
        self.keep = keep
        self.ttl_s = ttl_s
        self.messages = Counter(
            "spinewatch_lookback_messages",
            "Look-back messages read, by outcome (kept, or invalid: failed their contract).",
            ["outcome"],
            registry=registry,
        )
        self.rejected = Counter(
            "spinewatch_lookback_messages_rejected",
            "Look-back messages dead-lettered unread: unsigned, bad_signature or unknown_key.",
            ["reason"],
            registry=registry,
        )
        export_at_zero(self.rejected, SIGNATURE_FAULTS)

    async def handle(self, raw: bytes) -> bool:
        """Keep one verified look-back message; False (counted) if it breaks its contract."""
        try:
            message = DriftLookback.model_validate_json(raw)
        except ValidationError as exc:
            self.messages.labels("invalid").inc()
            # Where, never what: the input holds procedure ids.
            fields = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['type']}"
                for e in exc.errors(include_input=False, include_context=False, include_url=False)
            )
            log.error("invalid look-back message skipped: %s", fields[:500])
            return False
        fingerprint = chart_fingerprint(message.site_id, message.metric, message.direction)
        now_ms = int(self.clock().timestamp() * 1000)
        await self.steps.keep_lookback(
            fingerprint,
            str(message.signal_id),
            raw,
            now_ms=now_ms,
            keep=self.keep,
            ttl_s=self.ttl_s,
        )
        self.messages.labels("kept").inc()
        return True

    async def cases(self, request: web.Request) -> web.Response:
        """`GET /alerts/{fingerprint}/cases[?signal_id=]` (behind the identity middleware)."""
        fingerprint = request.match_info["fingerprint"]
        wanted = request.query.get("signal_id")
        if wanted is not None:
            try:
                wanted = str(UUID(wanted))
            except ValueError:
                return web.json_response(
                    {
                        "error": "invalid query",
                        "fields": [{"field": "signal_id", "type": "uuid_parsing",
                                    "message": "a signal id is a UUID"}],
                    },
                    status=400,
                )  # fmt: skip
        alert = await self.store.alert(fingerprint)
        if alert is None:
            return web.json_response({"error": "no such alert"}, status=404)
        if not has_chart(alert):
            return web.json_response(
                {"error": "no look-back list: only a drift alert has a chart and cases"},
                status=404,
            )
        signal = wanted or alert.signal_id
        held = await self.steps.lookback_signals(fingerprint)
        raw = await self.steps.lookback(fingerprint, signal)
        if raw is None:
            return web.json_response(
                {
                    "error": "no look-back list held for this signal (not received yet, or "
                    "older than those kept)",
                    "signal_id": signal,
                    "held_signals": held,
                },
                status=404,
            )
        listing = json.loads(raw)
        return web.json_response(
            {
                "fingerprint": fingerprint,
                "signal_id": signal,
                "latest_signal": signal == alert.signal_id,
                "restarted_on": listing.get("restarted_on"),
                "omitted": listing.get("omitted", 0),
                "cases": listing["cases"],
                "held_signals": held,
            }
        )
