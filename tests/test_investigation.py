"""The investigation workflow: the pure state machine, the request bodies, and the
atomic steps against a real redis-server (the HTTP and Kafka path is
tests/test_investigation_e2e.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from spinewatch.contracts.drift import DriftSentinel
from spinewatch.contracts.lookback import DriftLookback, LookbackCase
from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.domain.alerts.investigation import (
    NOTE_MAX_CHARS,
    AcknowledgeBody,
    CloseBody,
    InvestigateBody,
    Investigation,
    Refusal,
    ResetBody,
    decide,
    reset_id,
    reset_refusal,
)
from tests.test_alerting import FINGERPRINT, Webhook, _deliver_until, _in_control, _service, _signal

# Written out here, not read from the module: the workflow as the issue states it.
ORDER = ["fired", "acknowledged", "investigating", "closed"]
MOVE_FROM = {"acknowledge": "fired", "investigate": "acknowledged", "close": "investigating"}


@pytest.mark.parametrize(
    ("status", "move"), list(itertools.product(ORDER, ["acknowledge", "investigate", "close"]))
)
def test_each_move_is_allowed_from_one_status_only(status: Any, move: Any) -> None:
    decision = decide(status, move)
    if MOVE_FROM[move] == status:
        assert decision == (status, ORDER[ORDER.index(status) + 1])
        return
    assert isinstance(decision, Refusal)
    assert decision.status == status
    following = {v: k for k, v in MOVE_FROM.items()}.get(status)  # None once closed
    assert decision.allowed == following
    assert decision.duplicate == (ORDER.index(status) == ORDER.index(MOVE_FROM[move]) + 1)
    assert status in decision.message
    assert (following or "closed") in decision.message


def test_a_chart_is_reset_only_after_a_closing_once_and_only_a_drift_chart() -> None:
    def inv(status: Any, reset: str | None = None) -> Investigation:
        return Investigation("i", status, "2026-01-01T00:00:00Z", reset_id=reset)

    for status in ORDER[:-1]:
        refusal = reset_refusal(inv(status), has_chart=True)
        assert refusal is not None
        assert (refusal.status, refusal.duplicate) == (status, False)
    assert reset_refusal(inv("closed"), has_chart=True) is None
    done = reset_refusal(inv("closed", "r"), has_chart=True)
    assert done is not None
    assert done.duplicate
    for status in ORDER:
        none = reset_refusal(inv(status), has_chart=False)
        assert none is not None
        assert "no chart to reset" in none.message
    # A retry of the same closing's reset gets the same id; another investigation another.
    assert reset_id("a", FINGERPRINT) == reset_id("a", FINGERPRINT) != reset_id("b", FINGERPRINT)


def _errors(model: Any, body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(json.dumps(body))
    return [(".".join(map(str, e["loc"])), e["type"]) for e in caught.value.errors()]


def test_request_bodies_refuse_names_unknown_findings_and_overlong_text() -> None:
    assert AcknowledgeBody.model_validate_json("{}").reason is None
    assert _errors(AcknowledgeBody, {"by": "mallory"}) == [("by", "extra_forbidden")]
    assert _errors(InvestigateBody, {}) == [("reason", "missing")]
    assert _errors(InvestigateBody, {"reason": "   "}) == [("reason", "string_too_short")]
    ok = {"finding": "data_error", "reason": "coding error in the RIS feed"}
    assert CloseBody.model_validate_json(json.dumps(ok)).chart_action == "none"
    assert _errors(CloseBody, ok | {"finding": "bad_luck"}) == [("finding", "literal_error")]
    assert _errors(CloseBody, ok | {"finding": "other"}) == [("note", "value_error")]
    long_note = {"finding": "other", "note": "x" * (NOTE_MAX_CHARS + 1)}
    assert _errors(CloseBody, ok | long_note) == [("note", "string_too_long")]
    assert _errors(CloseBody, ok | {"reset_effective_after": "2026-01-01T00:00:00Z"}) == [
        ("reset_effective_after", "value_error")
    ]
    naive = {"chart_action": "reset", "reset_effective_after": "2026-01-01T00:00:00"}
    assert _errors(CloseBody, ok | naive) == [("reset_effective_after", "timezone_aware")]
    assert _errors(ResetBody, {"reason": "r", "by": "x"}) == [("by", "extra_forbidden")]


async def test_two_people_cannot_both_make_one_step(redis_url: str) -> None:
    webhook = Webhook()
    async with _service(redis_url, webhook) as one, _service(redis_url, webhook) as two:
        await one.handle(_signal().model_dump_json().encode())
        assert (await one.workflow.acknowledge(FINGERPRINT, "dr-a", None)).status == 200
        answers = await asyncio.gather(
            one.workflow.investigate(FINGERPRINT, "dr-a", "mine"),
            two.workflow.investigate(FINGERPRINT, "dr-b", "no, mine"),
        )
        assert sorted(a.status for a in answers) == [200, 409]
        lost = next(a for a in answers if a.status == 409)
        assert lost.body["status"] == "investigating"
        steps = await one.workflow.steps.history(FINGERPRINT)
        assert [s["transition"] for s in steps] == ["fired", "acknowledged", "investigating"]
        # One record and one set of deliveries: the winner's.
        winner = steps[-1]["by"]
        assert winner in {"dr-a", "dr-b"}
        assert await one.store.pending_deliveries() == 3  # firing, acknowledged, investigating


async def test_episodes_open_join_and_outlive_firing(redis_url: str) -> None:
    webhook = Webhook()
    async with _service(redis_url, webhook) as service:
        first = _signal()
        await service.handle(first.model_dump_json().encode())
        opened = (await service.store.alert(FINGERPRINT)).investigation  # type: ignore[union-attr]
        assert opened is not None
        assert (opened.status, opened.episodes) == ("fired", 1)
        await service.workflow.acknowledge(FINGERPRINT, "dr-a", None)
        # Back in control: the investigation stays open (status is orthogonal).
        await service.handle(_in_control(first).model_dump_json().encode())
        alert = await service.store.alert(FINGERPRINT)
        assert alert is not None
        assert (alert.status, alert.investigation.status) == ("resolved", "acknowledged")  # type: ignore[union-attr]
        # A new episode while it is open joins it, acknowledged as it was.
        await service.handle(_signal().model_dump_json().encode())
        joined = await service.store.alert(FINGERPRINT)
        assert joined is not None
        assert joined.status == "firing"
        assert joined.investigation == Investigation(
            opened.id, "acknowledged", opened.opened_at, 2, joined.investigation.updated_at,  # type: ignore[union-attr]
            "dr-a",
        )  # fmt: skip
        assert joined.acknowledged_by == "dr-a"
        await service.workflow.investigate(FINGERPRINT, "dr-b", "review of the June cases")
        body = CloseBody(finding="no_issue_found", reason="reviewed at M&M")
        assert (await service.workflow.close(FINGERPRINT, "dr-a", body)).status == 200
        # Closed while firing: a later signal of the same episode opens nothing.
        await service.handle(_signal(case=600).model_dump_json().encode())
        assert (await service.store.alert(FINGERPRINT)).investigation.status == "closed"  # type: ignore[union-attr]
        # A new episode after the closing opens a new investigation.
        latest = (await service.store.alert(FINGERPRINT)).signal_id  # type: ignore[union-attr]
        await service.handle(_in_control(_signal(uuid.UUID(latest))).model_dump_json().encode())
        await service.handle(_signal().model_dump_json().encode())
        fresh = (await service.store.alert(FINGERPRINT)).investigation  # type: ignore[union-attr]
        assert fresh is not None
        assert (fresh.status, fresh.episodes) == ("fired", 1)
        assert fresh.id != opened.id
        steps = await service.workflow.steps.history(FINGERPRINT)
        seen = [
            (s["transition"], s["investigation_id"] == opened.id, s.get("joined")) for s in steps
        ]
        assert seen == [
            ("fired", True, False), ("acknowledged", True, None), ("fired", True, True),
            ("investigating", True, None), ("closed", True, None), ("fired", False, False),
        ]  # fmt: skip


async def test_sentinels_are_investigated_but_have_no_chart_to_reset(redis_url: str) -> None:
    webhook = Webhook()
    await webhook.start()
    sentinel = DriftSentinel(
        event_type="drift.sentinel", schema_version=1, sentinel_id=uuid.uuid4(),
        site_id="riverside", metric="pulmonary_cement_embolism_rate",
        procedure_type=ProcedureType.PVP, indication=Indication.HEMANGIOMA,
        occurred_on=date(2025, 3, 2),
    )  # fmt: skip
    fp = f"sentinel.{sentinel.sentinel_id}"
    free_text = "the cement batch of 2 March"  # free text: never in a webhook
    try:
        async with _service(redis_url, webhook) as service:
            await service.handle(sentinel.model_dump_json().encode())
            flow = service.workflow
            assert (await flow.acknowledge(fp, "dr-a", free_text)).status == 200
            assert (await flow.investigate(fp, "dr-b", free_text)).status == 200
            with_reset = CloseBody(
                finding="other", note=free_text, reason=free_text, chart_action="reset"
            )
            refused = await flow.close(fp, "dr-a", with_reset)
            assert (refused.status, refused.body["error"]) == (
                409,
                "no chart to reset: not a drift alert",
            )
            closing = CloseBody(finding="other", note=free_text, reason=free_text)
            assert (await flow.close(fp, "dr-a", closing)).status == 200
            again = await flow.reset(fp, "dr-a", ResetBody(reason="now"))
            assert (again.status, again.body["error"]) == (
                409,
                "no chart to reset: not a drift alert",
            )
            await _deliver_until(service, webhook, 4)
            await service.deliver_due()
            assert webhook.transitions() == ["firing", "acknowledged", "investigating", "closed"]
            texts = [p["text"] for p in webhook.received[1:]]
            assert texts[0].endswith("(by dr-a)")
            assert texts[1].endswith("(by dr-b)")
            assert texts[2].endswith("(by dr-a): other (see the investigation's note)")
            assert free_text not in json.dumps(webhook.received)
            steps = await flow.steps.history(fp)
            assert [s["note"] for s in steps] == [None, None, None, free_text]
    finally:
        await webhook.stop()


async def test_an_alert_stored_before_investigations_is_investigated(redis_url: str) -> None:
    webhook = Webhook()
    async with _service(redis_url, webhook) as service:
        await service.handle(_signal().model_dump_json().encode())
        key = f"t:alert:{FINGERPRINT}"
        raw = await service.store.redis.get(key)
        assert raw is not None
        stored = json.loads(raw)
        del stored["investigation"]
        stored["acknowledged_by"] = "dr-before"
        await service.store.redis.set(key, json.dumps(stored))
        implicit = (await service.store.alert(FINGERPRINT)).investigation  # type: ignore[union-attr]
        assert implicit is not None
        assert implicit.status == "acknowledged"
        assert (await service.workflow.investigate(FINGERPRINT, "dr-a", "r")).status == 200
        moved = (await service.store.alert(FINGERPRINT)).investigation  # type: ignore[union-attr]
        assert (moved.id, moved.status) == (implicit.id, "investigating")  # type: ignore[union-attr]


def _lookback(signal_id: uuid.UUID, cases: int) -> bytes:
    return DriftLookback(
        event_type="drift.lookback", schema_version=1, signal_id=signal_id, site_id="riverside",
        metric="cement_leakage_rate_per_level", direction="worse",
        cases=tuple(
            LookbackCase(
                procedure_id=uuid.uuid4(), performed_on=date(2025, 6, 1) + timedelta(days=i),
                procedure_type=ProcedureType.PVP, indication=Indication.HEMANGIOMA,
                case_number=i + 1, adverse=i % 2 == 0, expected=0.1, statistic=0.5 * i,
                since_change_point=i > 0,
            )
            for i in range(cases)
        ),
    ).model_dump_json().encode()  # fmt: skip


async def test_look_back_lists_are_bounded_per_alert_and_expire(redis_url: str) -> None:
    webhook = Webhook()
    async with _service(redis_url, webhook, lookback_keep_signals=2) as service:
        signals = [uuid.uuid4() for _ in range(3)]
        for n, signal in enumerate(signals):
            arrival = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
            service.clock = lambda arrival=arrival: arrival  # type: ignore[misc]
            assert await service.lookbacks.handle(_lookback(signal, 3))
        steps = service.workflow.steps
        assert await steps.lookback_signals(FINGERPRINT) == [str(s) for s in signals[:0:-1]]
        assert await steps.lookback(FINGERPRINT, str(signals[0])) is None
        ttl = await service.store.redis.ttl(f"t:lookback:{FINGERPRINT}")
        assert 0 < ttl <= 180 * 86_400
        assert not await service.lookbacks.handle(b'{"event_type": "drift.lookback"}')
        invalid = service.registry.get_sample_value(
            "spinewatch_lookback_messages_total", {"outcome": "invalid"}
        )
        assert invalid == 1
