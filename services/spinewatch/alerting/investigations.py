"""The investigation workflow over HTTP: acknowledge, investigate, close, reset; history; cases.

Routes (all behind the identity middleware, `alerting/identities.py`: who
is the authenticated caller, never a body field):

* `POST /alerts/{fp}/ack` (optional body `{"reason"}`),
  `POST /alerts/{fp}/investigate` (`{"reason"}`),
  `POST /alerts/{fp}/close` (`{"finding", "note"?, "reason", "chart_action":
  "none"|"reset", "reset_effective_after"?}`),
  `POST /alerts/{fp}/reset` (`{"reason", "effective_after"?}`: only after a
  closed investigation that has not reset the chart yet);
* `GET /alerts/{fp}/history`: every step of every investigation of the alert;
* `GET /alerts/{fp}/cases[?signal_id=]`: the look-back list of the alert's
  latest signal (or the one named).

Answers: 200 with the step made; 400 with field-level errors (field,
type, message: never the value sent); 404 for an unknown alert; 409 with
the investigation's status and the move allowed next when the step does
not fit. The statuses and their order are `domain/alerts/investigation.py`;
the atomic decision is `adapters/redis_investigations.py`.

A chart reset (drift alerts only) is decided with the closing, or by
`/reset` after it: the step's records and a `chart.reset` delivery to the
control receiver are enqueued in the same Redis script, so a broker
outage delays the reset and never loses it (`adapters/receivers.py`).
Logs name the alert, the step and who: never a reason or a note.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from spinewatch.adapters.receivers import CONTROL_RECEIVER, AlertmanagerReceiver, Receiver
from spinewatch.adapters.redis_alerts import RedisAlertStore, delivery_spec
from spinewatch.adapters.redis_investigations import RedisInvestigations
from spinewatch.contracts.control import CONTROL_SCHEMA_VERSION, ChartReset, Finding
from spinewatch.domain.alerts.investigation import (
    ALREADY_RESET,
    MOVES,
    NEXT_MOVE,
    CloseBody,
    Investigation,
    Move,
    Refusal,
    ResetBody,
    Status,
    decide,
    entry,
    reset_id,
    reset_refusal,
)
from spinewatch.domain.alerts.model import Alert, has_chart, rfc3339

log = logging.getLogger(__name__)
Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Json


@dataclass(slots=True)
class _Plan:
    """One request's steps: what to record and send, and what to set, if still allowed."""

    alert: Alert
    investigation: Investigation
    move: Move | None  # None: a chart reset after the closing
    now: datetime
    records: list[Json] = field(default_factory=list)
    deliveries: list[tuple[str, Json]] = field(default_factory=list)
    changes: Json = field(default_factory=dict)  # on the investigation
    on_alert: Json = field(default_factory=dict)
    reset: UUID | None = None

    @property
    def now_ms(self) -> int:
        return int(self.now.timestamp() * 1000)


def _refused(refusal: Refusal) -> Answer:
    return Answer(
        409,
        {
            "outcome": "duplicate" if refusal.duplicate else "refused",
            "error": refusal.message,
            "status": refusal.status,
            "allowed": refusal.allowed,
        },
    )


UNKNOWN = Answer(404, {"error": "no such alert"})
_NO_CONTROL = Answer(503, {"error": "chart resets are not configured (no control topic)"})


class Workflow:
    """Moves one alert's investigation a step, atomically, and enqueues what it tells."""

    def __init__(
        self,
        store: RedisAlertStore,
        steps: RedisInvestigations,
        receivers: Mapping[str, Receiver],
        clock: Callable[[], datetime],
        *,
        resets: bool,
    ) -> None:
        self.store = store
        self.steps = steps
        self.receivers = receivers
        self.clock = clock
        self.resets = resets  # a control receiver is configured

    async def acknowledge(self, fingerprint: str, who: str, reason: str | None) -> Answer:
        return await self._move(fingerprint, who, "acknowledge", reason)

    async def investigate(self, fingerprint: str, who: str, reason: str) -> Answer:
        return await self._move(fingerprint, who, "investigate", reason)

    async def close(self, fingerprint: str, who: str, body: CloseBody) -> Answer:
        extra = {"finding": body.finding, "note": body.note, "chart_action": body.chart_action}
        reset = body.chart_action == "reset"
        return await self._move(
            fingerprint, who, "close", body.reason, extra, reset, body.reset_effective_after
        )

    async def reset(self, fingerprint: str, who: str, body: ResetBody) -> Answer:
        alert = await self.store.alert(fingerprint)
        if alert is None:
            return UNKNOWN
        plan = _Plan(alert, investigation_of(alert), None, self.clock())
        refusal = reset_refusal(plan.investigation, has_chart(alert))
        if refusal is not None:
            return _refused(refusal)
        if not self.resets:
            return _NO_CONTROL
        self._add_reset(plan, who, body.reason, plan.investigation.finding, body.effective_after)
        return await self._apply(plan)

    async def _move(  # noqa: PLR0917 - the handlers' one entry point
        self,
        fingerprint: str,
        who: str,
        move: Move,
        reason: str | None,
        extra: Json | None = None,
        reset: bool = False,
        effective_after: datetime | None = None,
    ) -> Answer:
        alert = await self.store.alert(fingerprint)
        if alert is None:
            return UNKNOWN
        plan = _Plan(alert, investigation_of(alert), move, self.clock())
        decision = decide(plan.investigation.status, move)
        if isinstance(decision, Refusal):
            return _refused(decision)
        if reset and not has_chart(alert):
            # A closing that cannot reset is refused whole: close with "none" instead.
            return _refused(reset_refusal(plan.investigation, False) or ALREADY_RESET)
        if reset and not self.resets:
            return _NO_CONTROL
        at = rfc3339(plan.now)
        step = decision[1]  # a step is named by the status it leads to
        record = entry(step, plan.investigation.id, at=at, by=who, reason=reason, **(extra or {}))
        self._add(plan, record)
        plan.changes |= {"updated_at": at, "updated_by": who}
        if move == "close":
            plan.changes["finding"] = record["finding"]
        if move == "acknowledge":
            plan.on_alert["acknowledged_by"] = who
        if reset:
            self._add_reset(plan, who, reason, record["finding"], effective_after)
        return await self._apply(plan)

    def _add(self, plan: _Plan, record: Json) -> None:
        """A step's record, and its deliveries: the webhook (who, status), the audit topic (all)."""
        plan.records.append(record)
        for name, receiver in self.receivers.items():
            if isinstance(receiver, AlertmanagerReceiver):
                continue  # Alertmanager knows firing and resolved only
            spec = delivery_spec(name, plan.alert.fingerprint, record["transition"], plan.now_ms)
            spec["step"] = record
            plan.deliveries.append((f"{record['id']}:{name}", spec))

    def _add_reset(
        self,
        plan: _Plan,
        who: str,
        reason: str | None,
        finding: Finding | None,
        effective_after: datetime | None,
    ) -> None:
        """The chart_reset step, and the signed `chart.reset` it publishes."""
        if finding is None:  # a closed investigation always has one
            raise ValueError("a chart reset needs the closing's finding")
        alert, investigation = plan.alert, plan.investigation
        rid = reset_id(investigation.id, alert.fingerprint)
        effective = effective_after or plan.now
        chart = ChartReset(
            event_type="chart.reset",
            schema_version=CONTROL_SCHEMA_VERSION,
            reset_id=rid,
            site_id=alert.labels["site"],
            metric=alert.labels["metric"],
            direction=alert.labels["direction"],
            effective_after=effective,
            fingerprint=alert.fingerprint,
            finding=finding,
            requested_by=who,
            requested_at=plan.now,
        )
        record = entry(
            "chart_reset",
            investigation.id,
            at=rfc3339(plan.now),
            by=who,
            reason=reason,
            finding=finding,
            reset_id=str(rid),
            effective_after=rfc3339(effective),
        )
        self._add(plan, record)
        control = delivery_spec(CONTROL_RECEIVER, alert.fingerprint, "chart_reset", plan.now_ms)
        control["step"] = {"reset": chart.model_dump(mode="json")}
        plan.deliveries.append((f"{record['id']}:{CONTROL_RECEIVER}", control))
        plan.changes["reset_id"] = str(rid)
        plan.reset = rid

    async def _apply(self, plan: _Plan) -> Answer:
        before, after = MOVES[plan.move] if plan.move else ("closed", "closed")
        fingerprint, investigation = plan.alert.fingerprint, plan.investigation
        outcome, found = await self.steps.move(
            fingerprint,
            investigation,
            before,
            after,
            set_investigation=plan.changes,
            set_alert=plan.on_alert,
            once_per_reset=plan.reset is not None,
            now_ms=plan.now_ms,
            records=plan.records,
            deliveries=plan.deliveries,
        )
        if outcome == "missing":
            return UNKNOWN
        if outcome == "moved":
            return Answer(409, {
                "outcome": "refused",
                "error": "a new firing opened a new investigation meanwhile: read the alert again",
                "status": found,
                "allowed": None,
            })  # fmt: skip
        if outcome == "reset_done":
            return _refused(ALREADY_RESET)
        if outcome == "refused":  # someone else moved it first
            current: Status = found or investigation.status
            moved = replace(investigation, status=current)
            decision = decide(current, plan.move) if plan.move else reset_refusal(moved, True)
            if isinstance(decision, Refusal):
                return _refused(decision)
            return _refused(Refusal(current, NEXT_MOVE[current], "the investigation moved"))
        for record in plan.records:  # never the reason or the note
            log.info("alert %s: %s by %s", fingerprint, record["transition"], record["by"])
        body: Json = {
            "outcome": "transition",
            "status": after,
            "investigation_id": investigation.id,
            "transitions": [r["id"] for r in plan.records],
        }
        if plan.reset is not None:
            body["reset_id"] = str(plan.reset)
        return Answer(200, body)


def investigation_of(alert: Alert) -> Investigation:
    if alert.investigation is None:  # the store always gives one (legacy included)
        raise ValueError("an alert without its investigation")
    return alert.investigation
