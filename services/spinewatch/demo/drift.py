"""The demo's drift part: one site's leakage odds double; who signals, and when.

The site and the moment of the change are the demo's ground truth; the
report reads the signals the worker actually published on the drift topic
(the contract the alerting service consumes), and each chart's state from
the worker's own monitor, so what is printed is what a dashboard and an
on-call receiver would see.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition

from spinewatch.adapters.kafka_security import KafkaSecurity
from spinewatch.contracts.drift import DriftSignalled, StratumBaseline
from spinewatch.demo.synthetic.cohort import Event, SiteProfile
from spinewatch.domain.drift.events import pending
from spinewatch.engine.bootstrap import RunningWorker

DRIFTING_SITE = "riverside"
LEAKAGE = "cement_leakage_rate_per_level"
DRIFT_ODDS_RATIO = 2.0
PUBLISH_TIMEOUT_S = 30.0


def with_drifting_site(sites: Sequence[SiteProfile]) -> tuple[SiteProfile, ...]:
    """The same sites, one of whose leakage odds double from a third of its procedures."""
    return tuple(
        dataclasses.replace(
            site, leakage_odds_ratio=DRIFT_ODDS_RATIO, drift_after=site.procedures // 3
        )
        if site.site_id == DRIFTING_SITE
        else site
        for site in sites
    )


def drift_start(events: Sequence[Event], site: SiteProfile) -> date:
    """Clinical date of the first procedure performed with the doubled odds."""
    times = sorted(
        e["occurred_at"]
        for e in events
        if e["event_type"] == "procedure.performed" and e["site_id"] == site.site_id
    )
    return datetime.fromisoformat(times[site.drift_after or 0]).astimezone(UTC).date()


async def print_drift(
    worker: RunningWorker, brokers: str, sites: Sequence[SiteProfile], began: date, out: TextIO
) -> None:
    settings, engine = worker.settings, worker.engine
    active = worker.active_partitions()
    engine.refresh_drift(active)
    # Each site's own design is calibrated in the background: the charts
    # are final once no site waits for one.
    deadline = time.monotonic() + PUBLISH_TIMEOUT_S
    while engine.drift.designing() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        engine.refresh_drift(active)
    expected = {
        str(item.message_id)
        for charts in engine.drift.partitions.values()
        for site_id, site in charts.sites.items()
        for item in pending(site_id, site, settings.drift_resolve_after_cases)
        if not item.resolved and item.message_id not in engine.drift.suppressed
    }
    signals = await _published_signals(
        brokers, settings.kafka_security, settings.drift_topic, expected
    )
    readings = list(engine.drift.readings(active))
    print(
        f"\nDrift charts per site: risk-adjusted Bernoulli CUSUM for odds x"
        f"{', x'.join(f'{r:g}' for r in settings.drift_odds_ratios)}, CUSUM on VAS change for "
        f"{settings.drift_vas_shift_sd:g} SD less relief; a false alarm every "
        f"{settings.drift_arl0_months:g} months per chart at each site's volume; "
        f"{len(readings)} charts",
        file=out,
    )
    print(
        f"  (demo truth: {DRIFTING_SITE}'s leakage odds doubled from its procedures of {began})",
        file=out,
    )
    for signal in sorted(signals, key=lambda s: (s.site_id, s.metric, s.case_number)):
        _print_signal(signal, out)
    stable = [s.site_id for s in sites if s.site_id != DRIFTING_SITE]
    stable_readings = [r for r in readings if r.site_id in stable]
    alarms = [r for r in stable_readings if r.track.signals]
    # What the budget allows: each chart's ARL0 in months at its site's volume.
    per_year = sum(
        12 * r.plan.volume_per_month / r.chart.design.arl0 for r in stable_readings if r.plan
    )
    if alarms:
        names = ", ".join(f"{r.site_id}/{r.chart.metric_name}" for r in alarms)
        print(
            f"  stable sites: false alarms on {names} (their {len(stable_readings)} charts "
            f"expect {per_year:.1f} a year at the budget)",
            file=out,
        )
    else:
        print(
            f"  stable sites ({', '.join(stable)}): all {len(stable_readings)} charts stayed "
            "in control",
            file=out,
        )


def _print_signal(signal: DriftSignalled, out: TextIO) -> None:
    if signal.observed_events is not None and signal.expected_events is not None:
        outcome = "leaking levels" if signal.unit == "treated_level" else "patients with it"
        observed = f"{signal.observed_events} {outcome} vs {signal.expected_events:.1f} expected"
        weighed = "; ".join(
            f"{b.described}, {_who(b)} x {b.cases}"
            for b in sorted(signal.baselines, key=lambda b: -b.cases)
        )
    else:
        observed = (
            f"mean VAS change {signal.observed_mean_change or 0:+.1f} vs "
            f"{signal.expected_mean_change or 0:+.1f} published"
        )
        weighed = "; ".join(f"{b.described}, {_who(b)} x {b.cases}" for b in signal.baselines)
    if signal.local_target is not None:
        target = signal.local_target
        weighed = f"local target {target.setting}={target.expected:g} ({target.described})"
    print(
        f"  SIGNAL {signal.site_id} / {signal.metric}: at case {signal.case_number} "
        f"({signal.signalled_on}), CUSUM {signal.statistic:.2f} >= h {signal.limit:.2f}\n"
        f"    change point estimated at case {signal.change_point_case_number} "
        f"({signal.change_point_on}), {signal.cases_since_change} cases since: {observed}\n"
        f"    expected from (baseline x cases): {weighed}",
        file=out,
    )


def _who(baseline: StratumBaseline) -> str:
    """Author or series, year and seed: the head of the citation (`cite()`: who, where: quote)."""
    if baseline.citation:
        return baseline.citation.partition(f", {baseline.locator}:")[0]
    return f"seed {baseline.seed[:3]}"


async def _published_signals(
    brokers: str, security: KafkaSecurity, topic: str, expected: set[str]
) -> list[DriftSignalled]:
    """Read the drift topic until every signal the charts hold has been published."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=brokers, enable_auto_commit=False, **security.aiokafka_kwargs()
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: dict[str, DriftSignalled] = {}
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        while not expected <= found.keys() and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for record in (r for records in batch.values() for r in records):
                if record.value and json.loads(record.value)["event_type"] == "drift.signalled":
                    message = DriftSignalled.model_validate_json(record.value)
                    found[str(message.signal_id)] = message
            await asyncio.sleep(0)
        missing = expected - found.keys()
        if missing:
            raise TimeoutError(
                f"{len(missing)} drift signals not published within {PUBLISH_TIMEOUT_S} s"
            )
        return list(found.values())
    finally:
        await consumer.stop()
