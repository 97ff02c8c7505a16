"""Stream silence, the pure detector and its alert: usual gap, floor, minimum, resumption.

Times are plain seconds handed in (the detector's clock is injected), so
every threshold is exercised exactly, on both sides.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest

from spinewatch.contracts.drift import DriftSilence
from spinewatch.domain.alerts.model import webhook_payload
from spinewatch.domain.alerts.policy import severity_of
from spinewatch.domain.alerts.silence import alert_from_silence
from spinewatch.domain.drift.silence import MAX_HELD, SilenceRule, SilenceWatch, silence_id
from spinewatch.engine.settings import Settings
from spinewatch.engine.silence_monitor import SilenceMonitor

HOUR = 3600.0
T0 = 1_800_000_000.0  # 2027-01-15, a plausible wall clock


def _steady(
    watch: SilenceWatch, site: str, n: int, gap_s: float, start: float = T0
) -> list[DriftSilence]:
    """n arrivals every gap_s; every message they imply."""
    found = []
    for i in range(n):
        message = watch.arrived(site, start + i * gap_s)
        if message is not None:
            found.append(message)
    return found


def test_the_usual_gap_is_the_mean_gap_between_arrivals() -> None:
    watch = SilenceWatch(SilenceRule(min_arrivals=5))
    _steady(watch, "north", 5, 6 * HOUR)
    assert watch.usual_gap_s(watch.sites["north"]) == pytest.approx(6 * HOUR)
    # Irregular arrivals: (last - first) / (n - 1).
    times = [T0, T0 + 1 * HOUR, T0 + 5 * HOUR, T0 + 6 * HOUR, T0 + 12 * HOUR]
    for t in times:
        watch.arrived("south", t)
    assert watch.usual_gap_s(watch.sites["south"]) == pytest.approx(3 * HOUR)


def test_a_site_goes_silent_after_multiple_usual_gaps_and_not_before() -> None:
    rule = SilenceRule(multiple=8, min_s=0, min_arrivals=10)
    watch = SilenceWatch(rule)
    gap = 10 * HOUR
    _steady(watch, "north", 10, gap)
    last = T0 + 9 * gap
    assert list(watch.judge(last + 8 * gap)) == []  # exactly at the threshold: not yet
    (silent,) = watch.judge(last + 8 * gap + 1)
    assert silent.status == "silent"
    assert silent.site_id == "north"
    assert silent.usual_gap_s == pytest.approx(gap)
    assert silent.threshold_s == pytest.approx(8 * gap)
    assert silent.last_event_at == datetime.fromtimestamp(last, UTC)
    assert silent.arrivals == 10
    assert silent.multiple == 8
    assert silent.silence_id == silence_id("north", last, None)
    # Once per episode, however long it lasts.
    assert list(watch.judge(last + 100 * gap)) == []
    (reading,) = watch.readings(last + 100 * gap)
    assert reading.silent
    assert reading.seconds_since_last == pytest.approx(100 * gap)


def test_the_floor_holds_a_busy_site_over_a_weekend() -> None:
    # A gap of 15 minutes: 8 gaps is 2 h, but a weekend is 60 h of nothing.
    rule = SilenceRule(multiple=8, min_s=96 * HOUR, min_arrivals=10)
    watch = SilenceWatch(rule)
    gap = 0.25 * HOUR
    _steady(watch, "busy", 200, gap)
    last = T0 + 199 * gap
    # Arrivals 15 minutes apart are held one per spacing (about 40 minutes).
    usual = watch.usual_gap_s(watch.sites["busy"])
    assert usual is not None
    assert gap <= usual <= rule.spacing_s + gap
    assert list(watch.judge(last + 60 * HOUR)) == []
    assert list(watch.judge(last + 96 * HOUR)) == []
    (silent,) = watch.judge(last + 96 * HOUR + 1)
    assert silent.threshold_s == 96 * HOUR


def test_no_judgement_before_the_minimum_number_of_arrivals() -> None:
    watch = SilenceWatch(SilenceRule(multiple=8, min_s=0, min_arrivals=10))
    _steady(watch, "new", 9, HOUR)
    assert list(watch.judge(T0 + 10_000 * HOUR)) == []
    (reading,) = watch.readings(T0 + 10_000 * HOUR)
    assert reading.threshold_s is None
    assert not reading.silent
    watch.arrived("new", T0 + 9 * HOUR)  # the tenth
    assert [m.status for m in watch.judge(T0 + 9 * HOUR + 8 * HOUR + 1)] == ["silent"]


def test_a_burst_counts_as_one_arrival() -> None:
    # A daily bulk upload of 500 events within a minute: the usual gap is a
    # day, not the seconds between the events of a burst.
    rule = SilenceRule(multiple=8, min_s=0, min_arrivals=10)
    watch = SilenceWatch(rule)
    for day in range(12):
        for event in range(500):
            watch.arrived("batchy", T0 + day * 86_400 + event * 0.1)
    beat = watch.sites["batchy"]
    assert len(beat.held) == 12
    assert watch.usual_gap_s(beat) == pytest.approx(86_400, rel=1e-3)
    assert list(watch.judge(T0 + 11 * 86_400 + 2 * 86_400)) == []


def test_memory_is_bounded_by_the_window() -> None:
    rule = SilenceRule(min_arrivals=10, window_s=1000 * HOUR)
    watch = SilenceWatch(rule)
    _steady(watch, "flood", 5 * MAX_HELD, rule.spacing_s)
    held = watch.sites["flood"].held
    assert len(held) <= MAX_HELD
    assert held[-1] - held[0] <= rule.window_s


def test_events_coming_back_resume_the_site_and_name_the_silence() -> None:
    watch = SilenceWatch(SilenceRule(multiple=8, min_s=0, min_arrivals=10))
    (first,) = _steady(watch, "north", 10, HOUR)
    # The first arrival a worker sees: a resumption of a silence it did not see begin.
    assert first.status == "resumed"
    assert first.last_event_at is None
    assert first.resumed_at == datetime.fromtimestamp(T0, UTC)
    last = T0 + 9 * HOUR
    (silent,) = watch.judge(last + 9 * HOUR)
    back = T0 + 30 * HOUR
    resumed = watch.arrived("north", back)
    assert resumed is not None
    assert resumed.status == "resumed"
    assert resumed.silence_id == silent.silence_id
    assert resumed.last_event_at == silent.last_event_at
    assert resumed.resumed_at == datetime.fromtimestamp(back, UTC)
    assert watch.arrived("north", back + HOUR) is None  # not silent any more
    (reading,) = watch.readings(back + HOUR)
    assert not reading.silent
    # The silence was a real gap: it lengthens the usual gap, so the site
    # does not flap straight back to silent.
    gap = watch.usual_gap_s(watch.sites["north"])
    assert gap is not None
    assert gap > HOUR


def test_poisson_arrivals_false_alarm_as_often_as_e_to_the_minus_multiple(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The default multiple's reasoning (domain/drift/silence.py): with the
    # usual gap well estimated, a gap outruns k of them with probability
    # e^-k (at k = 5, once every 148 gaps). Held instants raised so that
    # nothing coalesces (spacing 10 s against a mean gap of an hour).
    monkeypatch.setattr("spinewatch.domain.drift.silence.MAX_HELD", 10_000_000)
    rng = random.Random(18)
    rule = SilenceRule(multiple=5, min_s=0, min_arrivals=10, window_s=1e8)
    gaps = [rng.expovariate(1 / HOUR) for _ in range(60_000)]
    watch = SilenceWatch(rule)
    now, alarms = T0, 0
    for gap in gaps:
        # Judged just before the next arrival: silent if the gap outran the threshold.
        alarms += sum(1 for m in watch.judge(now + gap - 1e-6) if m.status == "silent")
        now += gap
        watch.arrived("poisson", now)
    expected = len(gaps) * math.exp(-5)
    assert abs(alarms - expected) < 4 * math.sqrt(expected), (alarms, expected)


def test_the_monitor_forgets_partitions_it_no_longer_owns() -> None:
    clock = [T0]
    monitor = SilenceMonitor(SilenceRule(multiple=2, min_s=0, min_arrivals=3), lambda: clock[0])
    for i in range(3):
        clock[0] = T0 + i * HOUR
        monitor.arrived(1, "north")
    taken = monitor.take({1})
    assert [(site, m.status) for site, m in taken] == [("north", "resumed")]
    clock[0] = T0 + 5 * HOUR
    assert [(site, m.status) for site, m in monitor.take({1})] == [("north", "silent")]
    assert [r.site_id for r in monitor.readings({1})] == ["north"]
    monitor.take({2})  # partition 1 moved to another worker
    assert monitor.partitions == {}
    assert list(monitor.readings({1})) == []
    assert SilenceMonitor(None).take({1}) == []


def test_the_settings_build_the_rule_or_turn_it_off() -> None:
    settings = Settings(embedded_broker=True, silence_multiple=6, silence_min_s=1.5)
    assert settings.silence_rule == SilenceRule(6, 1.5, 10, 28 * 86_400.0)
    assert Settings(embedded_broker=True, silence_watch=False).silence_rule is None
    with pytest.raises(ValueError, match="silence_multiple"):
        Settings(embedded_broker=True, silence_multiple=1)


def test_the_silence_alert_is_a_warning_naming_the_site_only() -> None:
    watch = SilenceWatch(SilenceRule(multiple=8, min_s=0, min_arrivals=10))
    _steady(watch, "north", 10, HOUR)
    (silent,) = watch.judge(T0 + 9 * HOUR + 9 * HOUR)
    now = datetime(2027, 1, 16, tzinfo=UTC)
    alert = alert_from_silence(silent, now, "http://grafana.test/d/x")
    assert alert.fingerprint == "silence.north"
    assert alert.labels == {
        "alertname": "SpinewatchSiteSilent",
        "severity": "warning",
        "site": "north",
    }
    assert severity_of("stream_silence") == "warning"
    assert alert.signal_id == str(silent.silence_id)
    assert "1.0 h" in alert.annotations["observed_vs_baseline"]
    assert "8.0 h" in alert.annotations["observed_vs_baseline"]
    text = webhook_payload(alert, "firing")["text"]
    assert text.startswith("[FIRING] [warning] north: no events received since 2027-01-15T")
    # The message round-trips through its contract.
    assert DriftSilence.model_validate_json(silent.model_dump_json()) == silent
