"""A site's charts redesigned as its volume grows: recorded, history not re-paged, no page."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from spinewatch.adapters.redis_alerts import RedisAlertStore
from spinewatch.alerting.service import AlertingService
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.contracts import Indication, ProcedureType, parse_event
from spinewatch.contracts.drift import DriftInControl, DriftRedesigned, DriftSignalled
from spinewatch.demo.synthetic.cohort import SiteProfile, encode, generate_cohort
from spinewatch.domain.drift.events import pending
from spinewatch.domain.outcomes.facts import fact_of
from spinewatch.domain.outcomes.partition import PartitionState, rebuilt
from spinewatch.engine.bootstrap import drift_monitor
from spinewatch.engine.drift_monitor import DriftMonitor
from tests.support import worker_settings

LEAKAGE = "cement_leakage_rate_per_level"
HEMANGIOMA = {(ProcedureType.PVP, Indication.HEMANGIOMA): 1.0}


def _state(events: list[dict[str, Any]]) -> PartitionState:
    parsed = [parse_event(encode(e)) for e in events]
    return rebuilt([[(e.procedure_id.bytes, fact_of(e)) for e in parsed]])


def _monitor() -> DriftMonitor:
    settings = worker_settings(
        "127.0.0.1:9", "redesign", drift_metrics=(LEAKAGE,), drift_vas_timepoints=()
    )
    designed = drift_monitor(settings, background=False)  # calibrates in this thread
    resolve = settings.drift_resolve_after_cases
    return DriftMonitor(designed.charts, resolve, designed.designer, design_every_s=0)


def test_a_site_whose_volume_quadruples_is_redesigned_without_repaging_history() -> None:
    # A year at 300 procedures whose leakage odds double (signals), then a
    # year at 1200: the trailing volume passes +25% and the chart is redesigned.
    quiet = generate_cohort(3, [SiteProfile("north", 300, HEMANGIOMA, leakage_odds_ratio=3.0)])
    busy = generate_cohort(
        4, [SiteProfile("north", 1200, HEMANGIOMA)], start=datetime(2026, 1, 1, tzinfo=UTC)
    )
    first_year = list(quiet.events)
    monitor = _monitor()
    monitor.track(0, state := _state(first_year), state.contributions.keys())
    monitor.refresh([0])
    first = monitor.take_outbox()
    designs = [m for _, m in first if isinstance(m, DriftRedesigned)]
    assert [(d.metric, d.previous_limit, d.provisional) for d in designs] == [
        (LEAKAGE, None, False)
    ]
    assert [(s.procedure_type, s.share) for s in designs[0].mix] == [(ProcedureType.PVP, 1.0)]
    assert 60.0 <= designs[0].arl0_months < 66.0
    old_limit = designs[0].limit
    old_signals = {m.signal_id for _, m in first if isinstance(m, DriftSignalled)}
    assert old_signals, "the seeded leakage drift was not signalled"

    both_years = _state(first_year + list(busy.events))
    monitor.track(0, both_years, both_years.contributions.keys())
    monitor.refresh([0])
    second = monitor.take_outbox()
    (redesign,) = [m for _, m in second if isinstance(m, DriftRedesigned)]
    assert redesign.previous_limit == old_limit
    assert redesign.limit != old_limit
    assert redesign.volume_per_month > designs[0].volume_per_month * 1.25
    # The new h gives the first year's signals new ids: only the chart's
    # latest episode is announced, the rest is never paged...
    site = monitor.partitions[0].sites["north"]
    signals = [p for p in pending("north", site, 100) if not p.resolved]
    announced = [m for _, m in second if isinstance(m, DriftSignalled)]
    assert len(signals) > 1
    assert [m.signal_id for m in announced] == [signals[-1].message_id]
    # ...not even when the next cases move the site.
    later = generate_cohort(
        5, [SiteProfile("north", 30, HEMANGIOMA)], start=datetime(2027, 1, 1, tzinfo=UTC)
    )
    third = _state(first_year + list(busy.events) + list(later.events))
    monitor.track(0, third, third.contributions.keys())
    monitor.refresh([0])
    history = {p.message_id for p in signals[:-1]}
    assert not [m for _, m in monitor.take_outbox() if getattr(m, "signal_id", None) in history]


async def test_the_alerting_service_records_a_redesign_and_pages_nobody(redis_url: str) -> None:
    settings = AlertingSettings(
        kafka_brokers="127.0.0.1:9",
        redis_url=redis_url,
        key_prefix="t",
        audit_topic=False,
        webhook_urls=("http://127.0.0.1:9/hook",),  # never called: nothing pages
    )
    redis = Redis.from_url(redis_url)
    try:
        service = AlertingService(settings, RedisAlertStore(redis, "t"), [], CollectorRegistry())
        message = DriftRedesigned(
            event_type="drift.redesigned", schema_version=1,
            redesign_id=uuid.UUID("6c1f0a52-9d0e-4a52-9a0b-2f5e7c3d9b41"), site_id="north",
            metric=LEAKAGE, direction="worse", provisional=False, previous_limit=5.96,
            limit=4.0, arl0_cases=2762, arl1_cases=99, arl0_months=60.0, arl1_months=2.2,
            budget_months=60, volume_per_month=46, mix=(), designed_on=date(2025, 4, 8),
        )  # fmt: skip
        assert await service.handle(message.model_dump_json().encode()) == "informational"
        assert await service.store.alert(f"north.{LEAKAGE}.worse") is None
    finally:
        await redis.aclose()


def test_a_site_whose_cases_are_all_voided_keeps_its_design() -> None:
    cohort = generate_cohort(3, [SiteProfile("north", 120, HEMANGIOMA)])
    monitor = _monitor()
    state = _state(list(cohort.events))
    monitor.track(0, state, state.contributions.keys())
    monitor.refresh([0])
    assert any(isinstance(m, DriftRedesigned) for _, m in monitor.take_outbox())
    limits = [c.design.limit for c in monitor.partitions[0].sites["north"].charts]
    # Every procedure gone (voided): the charts empty, the design kept, nothing sent.
    monitor.track(0, _state([]), state.contributions.keys())
    monitor.refresh([0])
    site = monitor.partitions[0].sites["north"]
    assert len(site) == 0
    assert [c.design.limit for c in site.charts] == limits
    assert not [m for _, m in monitor.take_outbox() if isinstance(m, DriftRedesigned)]


def test_a_rebuilt_worker_never_sends_the_history_it_did_not_re_announce() -> None:
    # The charts' whole history at a rebuild: the latest episode is
    # re-announced, and the earlier signals stay unsent when later cases
    # move the site (the alerting service's dedupe keys expire; history
    # re-sent after that would page resolved episodes again).
    quiet = generate_cohort(3, [SiteProfile("north", 300, HEMANGIOMA, leakage_odds_ratio=3.0)])
    monitor = _monitor()  # a restarted worker: it knows nothing it published
    monitor.rebuild({0: _state(list(quiet.events))})
    monitor.refresh([0])
    site = monitor.partitions[0].sites["north"]
    signals = [p for p in pending("north", site, 100) if not p.resolved]
    assert len(signals) > 1, "the seeded drift gave no history to hold back"
    announced = {m.signal_id for _, m in monitor.take_outbox() if isinstance(m, DriftSignalled)}
    assert announced == {signals[-1].message_id}
    # A few more cases inside the same year: the site moves, its design does not.
    later = generate_cohort(
        5, [SiteProfile("north", 8, HEMANGIOMA)], start=datetime(2025, 6, 1, tzinfo=UTC)
    )
    moved = _state(list(quiet.events) + list(later.events))
    monitor.track(0, moved, moved.contributions.keys())
    monitor.refresh([0])
    after = monitor.take_outbox()
    assert not [m for _, m in after if isinstance(m, DriftRedesigned)], "the design moved"
    history = {p.message_id for p in signals[:-1]}
    assert not [m for _, m in after if getattr(m, "signal_id", None) in history]


def test_an_episode_paged_and_resolved_is_not_paged_again_by_a_later_redesign() -> None:
    # A year whose leakage odds triple (signals), a quiet year (back in control:
    # the episode's page and its resolution go out), then a busy year: the
    # chart is redesigned, and at the new h the same drift is an episode that
    # is over as well. It was paged once; the redesign must not page it again.
    drifting = generate_cohort(3, [SiteProfile("north", 300, HEMANGIOMA, leakage_odds_ratio=3.0)])
    quiet = generate_cohort(
        6, [SiteProfile("north", 300, HEMANGIOMA)], start=datetime(2026, 1, 1, tzinfo=UTC)
    )
    busy = generate_cohort(
        4, [SiteProfile("north", 1200, HEMANGIOMA)], start=datetime(2027, 1, 1, tzinfo=UTC)
    )
    monitor = _monitor()
    two_years = list(drifting.events) + list(quiet.events)
    monitor.track(0, state := _state(two_years), state.contributions.keys())
    monitor.refresh([0])
    first = [m for _, m in monitor.take_outbox()]
    assert [m for m in first if isinstance(m, DriftSignalled)], "the drift was not signalled"
    assert [m for m in first if isinstance(m, DriftInControl)], "the episode did not end"

    three_years = _state(two_years + list(busy.events))
    monitor.track(0, three_years, three_years.contributions.keys())
    monitor.refresh([0])
    second = [m for _, m in monitor.take_outbox()]
    (redesign,) = [m for m in second if isinstance(m, DriftRedesigned)]
    assert redesign.previous_limit is not None
    site = monitor.partitions[0].sites["north"]
    assert site.tracks[0].signals, "no episode at the new h: nothing to hold back"
    assert site.tracks[0].in_control(monitor.resolve_after)
    assert not [m for m in second if isinstance(m, DriftSignalled | DriftInControl)]
