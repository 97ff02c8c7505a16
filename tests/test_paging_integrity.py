"""Paging integrity: a withdrawn sentinel reaches every receiver; an episode keeps its onset.

The sentinel half runs the worker's own domain code on real records (events
through facts, settle and the partition charts), then the alerting service
against a real redis-server with real HTTP receivers on loopback. The
episode half replays a backfill's signals through the Lua script.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from spinewatch.adapters.receivers import AlertmanagerReceiver, Receiver, WebhookReceiver
from spinewatch.alerting.service import AlertingService
from spinewatch.contracts import Event
from spinewatch.contracts.drift import (
    DriftSentinel,
    DriftSentinelWithdrawn,
    DriftSignalled,
    WithdrawalReason,
)
from spinewatch.domain.drift.events import sentinel_message
from spinewatch.domain.drift.site_charts import PartitionCharts
from spinewatch.domain.outcomes.facts import fact_of
from spinewatch.domain.outcomes.partition import PartitionState, apply_facts, rebuilt, settle
from tests.samples_sentinel import Pathway
from tests.support import wait_until
from tests.test_alerting import FINGERPRINT, Webhook, _service, _signal


class Worker:
    """A partition's records and charts, fed events as the worker feeds them."""

    def __init__(self) -> None:
        self.state = PartitionState()
        self.charts = PartitionCharts(())
        self.items: list[tuple[bytes, Any]] = []

    def send(self, *events: Event) -> list[DriftSentinel | DriftSentinelWithdrawn]:
        items = [(e.procedure_id.bytes, fact_of(e)) for e in events]
        self.items += items
        apply_facts(self.state, items)
        self.charts.track(self.state.contributions, settle(self.state), self.state.records)
        return [sentinel_message(found) for found in self.charts.take_sentinels()]

    def rebuilt(self) -> list[DriftSentinel | DriftSentinelWithdrawn]:
        """What a worker rebuilt from the changelog announces (as `DriftMonitor.rebuild`)."""
        state = rebuilt([self.items])
        charts = PartitionCharts(())
        charts.recall_withdrawals(state.records)
        charts.track(state.contributions, state.contributions.keys(), state.records)
        return [sentinel_message(found) for found in charts.take_sentinels()]


def _kinds(messages: list[DriftSentinel | DriftSentinelWithdrawn]) -> list[str]:
    return [
        m.event_type if isinstance(m, DriftSentinel) else f"withdrawn:{m.reason}" for m in messages
    ]


def test_a_retracted_embolism_is_withdrawn_and_a_new_report_pages_under_a_new_id() -> None:
    worker, case = Worker(), Pathway("riverside", 0)
    first = case.embolism()
    (paged,) = worker.send(case.procedure(), first)
    assert isinstance(paged, DriftSentinel)
    assert worker.send(first) == []  # a redelivery: nothing new
    (withdrawn,) = worker.send(case.retraction(first.event_id))
    assert isinstance(withdrawn, DriftSentinelWithdrawn)
    assert (withdrawn.sentinel_id, withdrawn.reason) == (paged.sentinel_id, "retracted")
    assert withdrawn.metric == paged.metric == "pulmonary_cement_embolism_rate"
    tally = worker.state.contributions[case.common["procedure_id"].bytes].tally
    assert tally.get("patients_with_complication.pulmonary_cement_embolism", 0) == 0
    # Reported again: a new generation, a new id, a new page.
    (again,) = worker.send(case.embolism())
    assert isinstance(again, DriftSentinel)
    assert again.sentinel_id not in (paged.sentinel_id, withdrawn.withdrawal_id)
    # A rebuilt worker re-announces the withdrawal and the live sentinel, same ids.
    announced = worker.rebuilt()
    assert {(m.event_type, str(m.sentinel_id)) for m in announced} == {
        ("drift.sentinel_withdrawn", str(paged.sentinel_id)),
        ("drift.sentinel", str(again.sentinel_id)),
    }
    assert {m.withdrawal_id for m in announced if isinstance(m, DriftSentinelWithdrawn)} == {
        withdrawn.withdrawal_id
    }
    raw = "".join(m.model_dump_json() for m in [paged, withdrawn, again, *announced])
    assert str(case.common["procedure_id"]) not in raw
    assert str(case.common["patient_ref"]) not in raw


def test_a_voided_procedure_withdraws_its_sentinel_and_a_reinstated_one_pages_again() -> None:
    worker, case = Worker(), Pathway("riverside", 1)
    procedure = case.procedure()
    (paged,) = worker.send(procedure, case.embolism())
    (voided,) = worker.send(case.retraction(procedure.event_id))
    assert isinstance(voided, DriftSentinelWithdrawn)
    assert (voided.sentinel_id, voided.reason) == (paged.sentinel_id, "procedure_voided")
    assert worker.rebuilt() == [voided]  # not lost by a rebuild
    # A new version of the procedure: the same sentinel is announced again
    # (the alerting service pages it again: its withdrawal was not for good).
    reinstated = case.procedure()
    (back,) = worker.send(reinstated)
    assert back == paged
    (again,) = worker.send(case.retraction(reinstated.event_id))
    assert isinstance(again, DriftSentinelWithdrawn)
    assert again.withdrawal_id != voided.withdrawal_id  # a second void, a second withdrawal
    # Moved to another site by a correction: withdrawn there, paged here.
    moved = Worker()
    other = Pathway("riverside", 2)
    (at_first,) = moved.send(other.procedure(), other.embolism())
    assert _kinds(moved.send(other.procedure(site_id="eastside"))) == [
        "withdrawn:procedure_corrected",
        "drift.sentinel",
    ]
    assert at_first.site_id == "riverside"


def _withdrawal(
    sentinel: DriftSentinel, reason: WithdrawalReason = "retracted"
) -> DriftSentinelWithdrawn:
    return DriftSentinelWithdrawn(
        event_type="drift.sentinel_withdrawn", schema_version=1,
        withdrawal_id=uuid.uuid5(sentinel.sentinel_id, reason), sentinel_id=sentinel.sentinel_id,
        site_id=sentinel.site_id, metric=sentinel.metric, reason=reason,
    )  # fmt: skip


async def test_a_withdrawal_resolves_the_page_for_every_receiver_once(redis_url: str) -> None:
    webhook, alertmanager = Webhook(), Webhook()
    await webhook.start()
    await alertmanager.start()
    paged = Worker().send(*_embolism_pathway())
    (sentinel,) = paged
    assert isinstance(sentinel, DriftSentinel)
    withdrawal = _withdrawal(sentinel)
    try:
        async with (
            _service(redis_url, webhook, resend_interval_s=0.5) as service,
            aiohttp.ClientSession() as session,
        ):
            service.receivers = _receivers(service, webhook, alertmanager, session)
            assert await service.handle(sentinel.model_dump_json().encode()) == "transition"
            await _deliver(service, webhook, alertmanager, 1)
            assert await service.handle(withdrawal.model_dump_json().encode()) == "transition"
            now = datetime.now(UTC)
            await _deliver(service, webhook, alertmanager, 2)
            # Redelivered, and the sentinel re-announced by a rebuilt worker:
            # a retraction is for good, nothing pages.
            assert await service.handle(withdrawal.model_dump_json().encode()) == "duplicate"
            assert await service.handle(sentinel.model_dump_json().encode()) == "duplicate"
            for _ in range(3):  # past several re-send intervals: no re-send
                await service.resend_due()
                await service.deliver_due()
            alert = await service.store.alert(f"sentinel.{sentinel.sentinel_id}")
            assert alert is not None
            assert (alert.status, alert.withdrawn_reason) == ("resolved", "retracted")
    finally:
        await webhook.stop()
        await alertmanager.stop()
    assert webhook.transitions() == ["firing", "withdrawn"]
    text = webhook.received[1]["text"]
    assert text.startswith("[WITHDRAWN] [critical] riverside: pulmonary cement embolism")
    assert "the complication report was retracted" in text
    assert webhook.received[1]["alert"]["withdrawn_reason"] == "retracted"
    assert webhook.received[1]["id"] == str(withdrawal.withdrawal_id)
    pushes = [alerts[0] for alerts in alertmanager.received]
    assert len(pushes) == 2
    assert datetime.fromisoformat(pushes[0]["endsAt"]) > now + timedelta(hours=23)  # 24 h page
    ends = datetime.fromisoformat(pushes[1]["endsAt"])
    assert ends <= datetime.now(UTC)  # resolved
    assert "withdrawn" in pushes[1]["annotations"]


async def test_a_reinstated_procedure_pages_again_under_a_transition_id_of_its_own(
    redis_url: str,
) -> None:
    webhook = Webhook()
    await webhook.start()
    (sentinel,) = Worker().send(*_embolism_pathway())
    assert isinstance(sentinel, DriftSentinel)
    raw = sentinel.model_dump_json().encode()
    try:
        async with _service(redis_url, webhook) as service:
            assert await service.handle(raw) == "transition"
            await _deliver(service, webhook, None, 1)
            voided = _withdrawal(sentinel, "procedure_voided").model_dump_json().encode()
            assert await service.handle(voided) == "transition"
            await _deliver(service, webhook, None, 2)
            assert await service.handle(raw) == "transition"  # back: paged again
            assert await service.handle(raw) == "duplicate"  # and once
            assert await service.handle(voided) == "duplicate"  # its withdrawal redelivered
            await _deliver(service, webhook, None, 3)
    finally:
        await webhook.stop()
    assert webhook.transitions() == ["firing", "withdrawn", "firing"]
    ids = [payload["id"] for payload in webhook.received]
    assert len(set(ids)) == 3  # receivers that dedupe by id keep the second page
    assert "procedure was voided" in webhook.received[1]["text"]


def _embolism_pathway() -> list[Event]:
    case = Pathway("riverside", 0)
    return [case.procedure(), case.embolism()]


def _receivers(
    service: AlertingService,
    webhook: Webhook,
    alertmanager: Webhook,
    session: aiohttp.ClientSession,
) -> dict[str, Receiver]:
    base = f"http://127.0.0.1:{alertmanager.port}"
    return {
        "alertmanager-0": AlertmanagerReceiver("alertmanager-0", base, session, 0.5),
        "webhook-0": WebhookReceiver("webhook-0", webhook.url, session),
    }


async def _deliver(
    service: AlertingService, webhook: Webhook, alertmanager: Webhook | None, count: int
) -> None:
    async def delivered() -> tuple[int, int]:
        await service.deliver_due()
        return len(webhook.received), len(alertmanager.received) if alertmanager else count

    await wait_until(delivered, lambda n: min(n) >= count, 20, f"{count} deliveries each")


# --- an episode's page: its first change point ------------------------------------------------


def _backfill() -> list[DriftSignalled]:
    """Seven signals of one episode, as a backfill publishes them: the first one's change
    point is the true onset (case 1); each later signal's own change point is later."""
    start = date(2025, 1, 6)
    signals = []
    for n, case in enumerate((12, 40, 66, 95, 120, 140, 160)):
        change = 1 if n == 0 else case - 4
        signals.append(
            _signal(case=case).model_copy(
                update={
                    "change_point_case_number": change,
                    "change_point_on": start + timedelta(days=change - 1),
                    "signalled_on": start + timedelta(days=case - 1),
                    "cases_since_change": case - change + 1,
                    "observed_events": 5 + n,
                }
            )
        )
    return signals


async def test_a_backfill_pages_once_and_the_page_keeps_the_first_change_point(
    redis_url: str,
) -> None:
    webhook, alertmanager = Webhook(), Webhook()
    await webhook.start()
    await alertmanager.start()
    signals = _backfill()
    try:
        async with (
            _service(redis_url, webhook, resend_interval_s=0.5) as service,
            aiohttp.ClientSession() as session,
        ):
            service.receivers = _receivers(service, webhook, alertmanager, session)
            outcomes = [await service.handle(s.model_dump_json().encode()) for s in signals]
            assert outcomes == ["transition"] + ["continued"] * 6
            await _deliver(service, webhook, alertmanager, 1)
            alert = await service.store.alert(FINGERPRINT)
            assert alert is not None
            notes = alert.annotations
            first, last = signals[0], signals[-1]
            onset = f"estimated start {first.change_point_on} (case 1);"
            assert notes["change_point"].startswith(onset)
            assert (
                f"signalled {first.signalled_on} (case {first.case_number})"
                in (notes["change_point"])
            )
            assert notes["latest_signal"].startswith(
                f"signalled {last.signalled_on} (case {last.case_number})"
            )
            assert notes["signals_in_episode"] == str(len(signals))
            assert notes["observed_vs_baseline"].startswith(
                f"{last.observed_events} adverse outcomes"
            )
            assert alert.signal_id == str(signals[-1].signal_id)  # resolution names the latest

            # Alertmanager's re-sends carry the refined annotations, onset kept.
            async def resent() -> int:
                await service.resend_due()
                await service.deliver_due()
                return len(alertmanager.received)

            await wait_until(resent, lambda n: n >= 2, 20, "a re-send")
    finally:
        await webhook.stop()
        await alertmanager.stop()
    assert webhook.transitions() == ["firing"]  # one page for the episode
    assert onset in webhook.received[0]["text"]
    latest = alertmanager.received[-1][0]["annotations"]
    assert latest["change_point"].startswith(onset)
    assert f"(case {last.case_number})" in latest["latest_signal"]


async def test_a_later_delivered_signal_with_an_earlier_onset_moves_the_onset_back(
    redis_url: str,
) -> None:
    # A refold after a late outcome can re-derive a signal whose change point
    # is earlier than the one paged: the page reports the earliest.
    webhook = Webhook()
    first, *_, last = _backfill()
    async with _service(redis_url, webhook) as service:
        assert await service.handle(last.model_dump_json().encode()) == "transition"
        assert await service.handle(first.model_dump_json().encode()) == "continued"
        alert = await service.store.alert(FINGERPRINT)
        assert alert is not None
        notes = alert.annotations
        assert notes["change_point"].startswith(f"estimated start {first.change_point_on} (case 1)")
        assert notes["latest_signal"].startswith(f"signalled {first.signalled_on} (case 12)")


# --- any history: what stays paged is what the records say ----------------------------------


class Pager:
    """The alerting service's rules for sentinels (the Lua scripts), as a model."""

    def __init__(self) -> None:
        self.seen: set[uuid.UUID] = set()
        self.state: dict[uuid.UUID, str] = {}  # sentinel id -> firing | withdrawal reason
        self.pages = 0

    def apply(self, message: DriftSentinel | DriftSentinelWithdrawn) -> None:
        sid = message.sentinel_id
        if isinstance(message, DriftSentinel):
            again = self.state.get(sid) in ("procedure_voided", "procedure_corrected")
            if sid not in self.seen or again:
                self.seen.add(sid)
                self.state[sid] = "firing"
                self.pages += 1
            return
        if message.withdrawal_id in self.seen:
            return
        self.seen.add(message.withdrawal_id)
        if self.state.get(sid) == "firing":
            self.state[sid] = message.reason
        elif sid not in self.state and message.reason == "retracted":
            self.seen.add(sid)

    def firing(self) -> set[uuid.UUID]:
        return {sid for sid, state in self.state.items() if state == "firing"}


Step = Literal["report", "retract", "void", "reinstate", "refresh"]


@given(
    st.lists(st.sampled_from(["report", "retract", "void", "reinstate", "refresh"]), max_size=30)
)
@settings(max_examples=200)
def test_whatever_the_history_what_stays_paged_is_what_the_records_say(steps: list[Step]) -> None:
    worker, case, pager = Worker(), Pathway("riverside", 0), Pager()
    procedure = case.procedure()
    live_reports: list[uuid.UUID] = []
    versions, pending = [procedure.event_id], list[Event]([procedure])
    for step in [*steps, "refresh"]:
        if step == "report":
            report = case.embolism()
            live_reports.append(report.event_id)
            pending.append(report)
        elif step == "retract" and live_reports:
            pending.append(case.retraction(live_reports.pop(0)))
        elif step == "void" and versions:
            pending += [case.retraction(v) for v in versions]
            versions = []
        elif step == "reinstate":
            version = case.procedure()
            versions.append(version.event_id)
            pending.append(version)
        elif step == "refresh" and pending:
            for message in worker.send(*pending):
                pager.apply(message)
            pending = []
    truth = {m.sentinel_id for m in worker.rebuilt() if isinstance(m, DriftSentinel)}
    assert pager.firing() == truth
    assert len(truth) == (1 if live_reports and versions else 0)
    # A rebuilt worker's re-announcements change nothing and page nobody.
    pages = pager.pages
    for message in worker.rebuilt():
        pager.apply(message)
    assert (pager.firing(), pager.pages) == (truth, pages)
