"""The alerting service: drift topic -> alert state in Redis -> receivers.

Three loops and an HTTP endpoint, all on one event loop (the loops run
under a supervisor, see `spinewatch.alerting.process`):

* consume: read drift messages (offsets committed only after Redis
  recorded them), turn each into an alert transition atomically in Redis,
  which enqueues one delivery per receiver on a real transition only;
* deliver: claim due deliveries, send them, and complete, retry with
  capped exponential backoff (receiver down, 5xx) or drop with the
  reason logged (4xx);
* re-send: every firing alert goes to Alertmanager again each
  `resend_interval_s`, as Alertmanager expects of pushed alerts;
* HTTP: `GET /alerts` (each alert with its investigation's status), the
  investigation workflow (`alerting/investigations.py`: ack, investigate,
  close, reset, history, each step recorded under the caller's
  authenticated identity, `alerting/identities.py`), the look-back list
  (`alerting/lookback.py`: cases), `GET /metrics`, `GET /healthz`,
  `GET /readyz` (the last three need no identity).

Drift messages reach `handle` only once their signature verified
(`alerting/process.py`): a forged one is dead-lettered there, counted in
`spinewatch_drift_messages_rejected_total{reason}`, and pages nobody.

Several processes may run against one Redis: the Lua scripts decide every
transition and every claim atomically, so each page goes out once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import TypeAdapter, ValidationError
from redis.exceptions import RedisError

from spinewatch.adapters.receivers import (
    CONTROL_RECEIVER,
    AlertmanagerReceiver,
    Decision,
    Receiver,
)
from spinewatch.adapters.redis_alerts import Outcome, RedisAlertStore, delivery_spec
from spinewatch.adapters.redis_investigations import RedisInvestigations
from spinewatch.alerting.identities import Identities, Refusal
from spinewatch.alerting.investigation_routes import InvestigationRoutes
from spinewatch.alerting.investigations import Workflow
from spinewatch.alerting.lookback import LookbackKeeper
from spinewatch.alerting.metrics import AlertingMetrics
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.alerting.silence import record_silence
from spinewatch.contracts.drift import (
    DriftCompleteness,
    DriftInControl,
    DriftMessage,
    DriftRedesigned,
    DriftSentinel,
    DriftSentinelWithdrawn,
    DriftSignalled,
    DriftSilence,
)
from spinewatch.domain.alerts.model import (
    Alert,
    Transition,
    alert_from_sentinel,
    alert_from_signal,
    resolved,
    withdrawn,
)
from spinewatch.runtime.health import Check, report

log = logging.getLogger(__name__)

# What `_record` turns into alert transitions or records (drift.completeness
# is informational: counted in `handle`, never paged).
_Paging = (
    DriftSignalled
    | DriftInControl
    | DriftSentinel
    | DriftSentinelWithdrawn
    | DriftSilence
    | DriftRedesigned
)
_DRIFT_MESSAGE: TypeAdapter[DriftMessage] = TypeAdapter(DriftMessage)


class AlertingService:
    def __init__(
        self,
        settings: AlertingSettings,
        store: RedisAlertStore,
        receivers: list[Receiver],
        registry: CollectorRegistry,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        control: Receiver | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.receivers = {r.name: r for r in receivers}
        # Chart resets (the control topic): never a page, so not among the receivers.
        self.control = control
        self.registry = registry
        self.metrics = AlertingMetrics(registry)
        self.clock = clock
        self._checks: Callable[[], list[Check]] = list
        steps = RedisInvestigations(store.redis, store.prefix)
        now = lambda: self.clock()  # noqa: E731, PLW0108 - late-bound: a replaced clock counts
        self.workflow = Workflow(store, steps, self.receivers, now, resets=control is not None)
        self.lookbacks = LookbackKeeper(
            store,
            steps,
            registry,
            now,
            keep=settings.lookback_keep_signals,
            ttl_s=int(settings.lookback_ttl_days * 86_400),
        )

    def _now(self) -> tuple[datetime, int]:
        now = self.clock()
        return now, int(now.timestamp() * 1000)

    def _deliveries(
        self, base_id: str, fingerprint: str, transition: Transition, now_ms: int
    ) -> list[tuple[str, dict[str, Any]]]:
        return [
            (f"{base_id}:{name}", delivery_spec(name, fingerprint, transition, now_ms))
            for name in self.receivers
        ]

    async def handle(self, raw: bytes) -> Outcome | None:
        """Record one drift message; None (and counted) if it breaks its contract,
        or if it is informational (`drift.completeness`: never paged)."""
        try:
            message = _DRIFT_MESSAGE.validate_json(raw)
        except ValidationError as exc:
            self.metrics.invalid.inc()
            fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            log.error("invalid drift message skipped: %s", fields[:500])
            return None
        if isinstance(message, DriftCompleteness):
            self.metrics.messages.labels("informational").inc()
            return None
        try:
            outcome = await self._record(message)
        except (RedisError, OSError, TimeoutError):
            raise  # Redis down or slow: the consumer restarts and reads it again
        except Exception as exc:
            # Anything else would fail the same way on every retry and stop
            # every page behind it: skip this one, loudly.
            self.metrics.skipped.labels(type(exc).__name__).inc()
            log.error("drift message skipped: it could not be recorded (%s)", type(exc).__name__)
            return None
        self.metrics.messages.labels(outcome).inc()
        return outcome

    async def _record(self, message: _Paging) -> Outcome:
        if isinstance(message, DriftRedesigned):
            # A chart's new limit for its site: on the topic for the record, never paged.
            return "informational"
        now, now_ms = self._now()
        resend_ms = now_ms + int(self.settings.resend_interval_s * 1000)
        if isinstance(message, DriftSignalled):
            alert = alert_from_signal(message, now, self.settings.dashboard_url)
            outcome = await self.store.record(
                str(message.signal_id),
                "signal",
                alert,
                now_ms=now_ms,
                resend_at_ms=resend_ms,
                deliveries=self._deliveries(
                    str(message.signal_id), alert.fingerprint, "firing", now_ms
                ),
            )
        elif isinstance(message, DriftSentinel):
            alert = alert_from_sentinel(message, now, self.settings.dashboard_url)
            transition_id = await self._sentinel_transition_id(alert)
            outcome = await self.store.record(
                str(message.sentinel_id),
                "sentinel",
                alert,
                now_ms=now_ms,
                resend_at_ms=now_ms,
                deliveries=self._deliveries(transition_id, alert.fingerprint, "firing", now_ms),
                firing_id=transition_id,
            )
        elif isinstance(message, DriftSilence):
            outcome = await record_silence(
                self.store,
                message,
                self._deliveries,
                now=now,
                now_ms=now_ms,
                resend_at_ms=resend_ms,
                dashboard_url=self.settings.dashboard_url,
            )
        elif isinstance(message, DriftSentinelWithdrawn):
            outcome = await self._withdraw(message, now, now_ms)
        else:
            outcome = await self._in_control(message, now, now_ms)
        return outcome

    async def _in_control(self, message: DriftInControl, now: datetime, now_ms: int) -> Outcome:
        fp = f"{message.site_id}.{message.metric}.{message.direction}"
        current = await self.store.alert(fp)
        if current is None:
            return "stale"
        episode_end = resolved(current, now)
        # The episode's signal id must match inside the script, atomically.
        probe = Alert(**{**asdict(episode_end), "signal_id": str(message.signal_id)})
        message_id = f"{message.signal_id}:in_control"
        # Due 1 ms after anything enqueued now: a firing and its resolution
        # read in one batch still go out in that order.
        return await self.store.record(
            message_id,
            "in_control",
            probe,
            now_ms=now_ms + 1,
            resend_at_ms=now_ms,
            deliveries=self._deliveries(message_id, fp, "resolved", now_ms),
        )

    async def _sentinel_transition_id(self, alert: Alert) -> str:
        """The sentinel id; a page again after a void or a move gets an id of its own,
        so receivers that dedupe by id do not drop it (the Lua script decides)."""
        held = await self.store.alert(alert.fingerprint)
        if held is None or held.withdrawn_reason in (None, "retracted"):
            return alert.signal_id
        return f"{alert.signal_id}:again:{held.ends_at}"

    async def _withdraw(
        self, message: DriftSentinelWithdrawn, now: datetime, now_ms: int
    ) -> Outcome:
        """A sentinel's cause is gone: resolve its alert, tell every receiver why."""
        fp = f"sentinel.{message.sentinel_id}"
        current = await self.store.alert(fp)
        if current is None:  # never paged: nobody to tell (the script remembers it)
            current = Alert(fp, "firing", "critical", {}, {}, str(message.sentinel_id), "")
        message_id = str(message.withdrawal_id)
        # Due 1 ms after anything enqueued now, like a resolution: a page and
        # its withdrawal read in one batch go out in that order.
        return await self.store.withdraw(
            message_id,
            withdrawn(current, message, now),
            now_ms=now_ms + 1,
            deliveries=self._deliveries(message_id, fp, "withdrawn", now_ms),
        )

    async def deliver_due(self) -> int:
        """Send every due delivery once; how many were delivered."""
        now, now_ms = self._now()
        claimed = await self.store.claim_deliveries(now_ms, int(self.settings.lease_s * 1000))
        delivered = 0
        for delivery_id, spec in claimed:
            delivered += await self._deliver(delivery_id, spec, now, now_ms)
        return delivered

    async def _deliver(
        self, delivery_id: str, spec: dict[str, Any], now: datetime, now_ms: int
    ) -> int:
        if spec["receiver"] == CONTROL_RECEIVER:
            receiver = self.control
        else:
            receiver = self.receivers.get(spec["receiver"])
        alert = await self.store.alert(spec["fingerprint"])
        if receiver is None or alert is None:
            log.error("delivery %s dropped: receiver or alert gone", delivery_id)
            await self.store.complete(delivery_id)
            return 0
        # One id per transition, shared by its deliveries to every receiver.
        transition_id = delivery_id.rsplit(":", 1)[0]
        # An investigation's step carries its record, as decided.
        step = spec.get("step")
        result = await receiver.send(alert, spec["transition"], now, transition_id, step)
        if result.decision is Decision.DELIVERED:
            await self.store.complete(delivery_id)
            self.metrics.sent.labels(receiver.name).inc()
            self.metrics.latency.labels(receiver.name).observe(
                max(0, now_ms - spec["enqueued_ms"]) / 1000
            )
            return 1
        self.metrics.failed.labels(receiver.name, result.decision.value).inc()
        if result.decision is Decision.REJECTED:
            log.error(
                "receiver %s rejected %s: %s", receiver.name, alert.fingerprint, result.detail
            )
            await self.store.complete(delivery_id)
            return 0
        attempts = spec["attempts"] + 1
        delay = min(self.settings.retry_max_s, self.settings.retry_base_s * 2 ** (attempts - 1))
        log.warning(
            "receiver %s unavailable (%s); retry %d in %.1f s",
            receiver.name,
            result.detail,
            attempts,
            delay,
        )
        await self.store.retry(
            delivery_id, spec | {"attempts": attempts}, now_ms + int(delay * 1000)
        )
        return 0

    async def resend_due(self) -> None:
        """Re-send firing alerts to Alertmanager (claimed once across processes)."""
        _, now_ms = self._now()
        interval_ms = int(self.settings.resend_interval_s * 1000)
        for fingerprint in await self.store.claim_resends(now_ms, now_ms + interval_ms):
            alert = await self.store.alert(fingerprint)
            if alert is None or alert.status != "firing":
                continue
            for name, receiver in self.receivers.items():
                if isinstance(receiver, AlertmanagerReceiver):
                    spec = delivery_spec(name, fingerprint, "firing", now_ms)
                    await self.store.enqueue(f"resend:{fingerprint}:{now_ms}:{name}", spec, now_ms)

    async def refresh_gauges(self) -> None:
        counts = {"critical": 0, "warning": 0}
        for alert in await self.store.alerts():
            if alert.status == "firing":
                counts[alert.severity] += 1
        for severity, count in counts.items():
            self.metrics.firing.labels(severity).set(count)

    # -- HTTP -------------------------------------------------------------
    def http_app(
        self, identities: Identities, checks: Callable[[], list[Check]] = list
    ) -> web.Application:
        self._checks = checks
        app = web.Application(middlewares=[identities.middleware(self._refused)])
        app.router.add_get("/alerts", self._list)
        InvestigationRoutes(self.workflow).add_to(app)
        app.router.add_get("/alerts/{fingerprint}/cases", self.lookbacks.cases)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(a) for a in await self.store.alerts()])

    def _refused(self, refusal: Refusal) -> None:
        self.metrics.refused.labels(refusal.value).inc()

    async def _metrics(self, request: web.Request) -> web.Response:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            # Redis down: the firing gauges keep their last values and the
            # redis check, in this same answer, says why. Never a 500 here.
            await self.refresh_gauges()
        self._checks()  # spinewatch_health_check_ok as of this scrape
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return self._health(readiness=False)

    async def _readyz(self, request: web.Request) -> web.Response:
        return self._health(readiness=True)

    def _health(self, *, readiness: bool) -> web.Response:
        status, body = report(self._checks(), readiness=readiness)
        return web.json_response(body, status=status)
