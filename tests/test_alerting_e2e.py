"""End-to-end alerting: engine, alerting service, real Redis and real Alertmanager.

A site's leakage odds triple for 250 procedures, then return to baseline.
The first half of the stream (up to the chart's signal) must put exactly
one alert, with the right labels and annotations, into Alertmanager (read
back through its own API); the rest of the stream brings the chart back in
control, and the alert must resolve. The audit topic must show exactly one
firing and one resolved transition for the episode.

Before any of it, forged drift messages go straight to the drift topic
(issue 17: a forged `drift.signalled` paged on-call staff): valid JSON of a
signal, once unsigned, once tampered with after signing, once signed with
a key the deployment does not hold. None may page or reach the alert
state; each must be dead-lettered with its reason and counted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from spinewatch.adapters.kafka_clients import started
from spinewatch.adapters.message_signing import Keyring, TopicKind
from spinewatch.alerting.process import running_alerting
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.contracts import Indication, ProcedureType, parse_event
from spinewatch.demo.synthetic.cohort import SiteProfile, encode, generate_cohort
from spinewatch.domain.alerts.policy import SENTINEL_METRICS
from spinewatch.domain.drift.events import clinical_date
from spinewatch.domain.drift.site_charts import Track
from spinewatch.domain.outcomes.facts import fact_of
from spinewatch.domain.outcomes.partition import rebuilt
from spinewatch.engine.bootstrap import drift_monitor
from spinewatch.engine.settings import Settings
from tests.conftest import SettingsFactory
from tests.expectation import expected_counts
from tests.servers import Alertmanager
from tests.support import (
    consume,
    produce_keyed,
    running_worker,
    scrape_async,
    sum_by,
    wait_until,
)
from tests.test_alerting import _signal

pytestmark = pytest.mark.e2e

LEAKAGE = "cement_leakage_rate_per_level"
RESOLVE_AFTER = 150
SITE = SiteProfile(
    "drifting",
    1500,
    {(ProcedureType.PVP, Indication.HEMANGIOMA): 1.0},
    leakage_odds_ratio=3.0,
    drift_after=150,
    drift_until=400,
)


def _engine_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(
        drift_metrics=(LEAKAGE,),
        drift_vas_timepoints=(),
        drift_resolve_after_cases=RESOLVE_AFTER,
        drift_interval_s=0.2,
    )


def _reference_track(settings: Settings, events: Sequence[dict[str, Any]]) -> Track:
    """The drifting site's leakage chart as defined: the fold over these records,
    at the site's own design for them (as the worker designs it)."""
    parsed = [parse_event(encode(e)) for e in events]
    state = rebuilt([[(e.procedure_id.bytes, fact_of(e)) for e in parsed]])
    monitor = drift_monitor(settings, background=False)
    monitor.rebuild({0: state})
    monitor.refresh([0])
    (track,) = monitor.partitions[0].sites[SITE.site_id].tracks
    return track


def _first_signal_time(settings: Settings, events: tuple[dict[str, Any], ...]) -> datetime:
    """From the fold over all records: one episode, back in control at the end.

    The time returned is where the worker, given the events up to it,
    signals first: the design follows the history seen (a site's first
    months are designed provisionally), so the fold over that prefix is
    the reference, and its first signal must be the prefix's last case.
    """
    track = _reference_track(settings, events)
    indexes = [s.signal.case_index for s in track.signals]
    assert indexes, "the seeded drift is not signalled by the reference fold"
    assert all(b - a < RESOLVE_AFTER for a, b in itertools.pairwise(indexes))
    assert track.in_control(RESOLVE_AFTER), "the seeded stream does not end in control"
    at_us = track.signals[0].at[0]
    for _ in range(10):
        until = datetime.fromtimestamp(at_us / 1e6, UTC)
        prefix = [e for e in events if datetime.fromisoformat(e["occurred_at"]) <= until]
        signals = _reference_track(settings, prefix).signals
        assert signals, "the events up to the first signal do not signal"
        if signals[0].at[0] == at_us:
            return until
        at_us = signals[0].at[0]
    raise AssertionError("no stable first signal time")


def _keyed(events: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    return [(e["site_id"].encode(), encode(e)) for e in events]


Record = tuple[bytes, bytes, list[tuple[str, bytes]]]


def _forged_signals(key: str) -> dict[str, Record]:
    """A critical-looking signal for a site of its own, three ways not from a worker."""
    signal = _signal().model_copy(update={"site_id": "forged"})
    site, value = b"forged", signal.model_dump_json().encode()
    other = _signal().model_copy(update={"site_id": "forged"}).model_dump_json().encode()
    return {
        "unsigned": (site, value, []),
        # A real signature, of another message: copied headers prove nothing.
        "bad_signature": (site, value, [Keyring(key.encode()).sign(TopicKind.DRIFT, site, other)]),
        "unknown_key": (
            site, value, [Keyring(b"m" * 32).sign(TopicKind.DRIFT, site, value)]
        ),
    }  # fmt: skip


async def _active(api: Alertmanager, **labels: str) -> list[dict[str, Any]]:
    """Active alerts in Alertmanager whose labels include `labels`."""
    alerts = await asyncio.to_thread(api.alerts)
    return [a for a in alerts if labels.items() <= a["labels"].items()]


async def test_a_drift_episode_fires_once_in_alertmanager_and_resolves(
    make_settings: SettingsFactory,
    kafka_bootstrap: str,
    redis_url: str,
    alertmanager_api: Alertmanager,
) -> None:
    settings = _engine_settings(make_settings)
    # A metastasis site beside it: its neurological deficits are sentinels.
    oncology = SiteProfile("oncology", 300, {(ProcedureType.PVP, Indication.METASTASIS): 1.0})
    cohort = generate_cohort(17, [SITE, oncology], duplicate_share=0, malformed=0, retractions=0)
    signalled_at = _first_signal_time(settings, cohort.events)
    first = [e for e in cohort.events if datetime.fromisoformat(e["occurred_at"]) <= signalled_at]
    rest = [e for e in cohort.events if datetime.fromisoformat(e["occurred_at"]) > signalled_at]
    alerting = AlertingSettings(
        kafka_brokers=kafka_bootstrap,
        app_id=settings.app_id,
        redis_url=redis_url,
        key_prefix=settings.app_id,
        alertmanager_urls=(alertmanager_api.url,),
        http_port=0,
        resend_interval_s=1.0,
        poll_interval_s=0.1,
        dashboard_url="http://grafana.test/d/spinewatch",
        signing_key=settings.signing_key,
    )
    assert settings.signing_key is not None
    forged = _forged_signals(settings.signing_key.get_secret_value())
    async with (
        running_worker(settings, kafka_bootstrap),
        running_alerting(alerting) as running,
    ):
        async with started(AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)) as producer:
            for key, value, headers in forged.values():
                await producer.send_and_wait(alerting.drift_topic, value, key=key, headers=headers)
        rejected = await wait_until(
            lambda: scrape_async(f"{running.url}/metrics"),
            lambda s: sum_by(s, "spinewatch_drift_messages_rejected_total") >= len(forged),
            30,
            "the forged drift messages rejected",
        )
        assert {
            reason: sum_by(rejected, "spinewatch_drift_messages_rejected_total", reason=reason)
            for reason in forged
        } == dict.fromkeys(forged, 1)
        # Keyed by site: each site's events reach the engine in clinical order,
        # as the one-episode expectation above assumes (out-of-order arrival
        # can make an intermediate fold signal, and publish, a transient
        # episode that the final fold does not hold).
        await produce_keyed(kafka_bootstrap, settings.events_topic, _keyed(first))
        firing = await wait_until(
            lambda: _active(alertmanager_api, site="drifting"),
            lambda a: len(a) >= 1,
            60,
            "the alert",
        )
        (alert,) = firing
        assert alert["labels"] == {
            "alertname": "SpinewatchDriftSignal",
            "severity": "warning",
            "site": "drifting",
            "procedure": "pvp",
            "indication": "hemangioma",
            "metric": LEAKAGE,
            "direction": "worse",
        }
        notes = alert["annotations"]
        assert notes["summary"] == f"drifting: {LEAKAGE} drifted (worse)"
        assert "s000.leakage.per_level" in notes["citation"]
        assert "seed 000_" in notes["citation"]
        assert (
            f"signalled {clinical_date((int(signalled_at.timestamp() * 1e6), b''))}"
            in (notes["change_point"])
        )
        assert "estimated start" in notes["change_point"]
        assert "adverse outcomes vs" in notes["observed_vs_baseline"]
        assert notes["dashboard"].startswith("http://grafana.test/d/spinewatch?var-site=drifting")

        await produce_keyed(kafka_bootstrap, settings.events_topic, _keyed(rest))
        await wait_until(
            lambda: _active(alertmanager_api, site="drifting"), lambda a: a == [], 90, "resolution"
        )
        service = running.service
        alerts = [
            a for a in await service.store.alerts() if not a.fingerprint.startswith("sentinel.")
        ]
        assert [(a.fingerprint, a.status) for a in alerts] == [
            (f"drifting.{LEAKAGE}.worse", "resolved")
        ]
        # Sentinel events page on their own, one critical alert each.
        expected = expected_counts(cohort.events)
        sentinels = sum(
            counts.get(("spinewatch_outcome_numerator", metric, ""), 0)
            for counts in expected.values()
            for metric in SENTINEL_METRICS
        )
        paged = await wait_until(
            lambda: _active(alertmanager_api, alertname="SpinewatchSentinelEvent"),
            lambda a: len(a) >= sentinels, 30, "the sentinel alerts",
        )  # fmt: skip
        assert sentinels > 0, "the seeded cohort has no sentinel event"
        assert len(paged) == sentinels
        assert all(a["labels"]["severity"] == "critical" for a in paged)
        # The forged messages paged nobody and never reached the alert state.
        assert await _active(alertmanager_api, site="forged") == []
        assert not [a for a in await service.store.alerts() if a.fingerprint.startswith("forged")]
        # Every delivery (the audit records included) made before stopping.
        await wait_until(service.store.pending_deliveries, lambda n: n == 0, 30, "an empty outbox")

    # The forged messages wait in the dead-letter topic, each with its reason, as received.
    letters = await consume(kafka_bootstrap, settings.deadletter_topic, len(forged), timeout_s=5)
    assert {dict(r.headers)["spinewatch-reason"].decode(): r.value for r in letters} == {
        reason: value for reason, (_, value, _) in forged.items()
    }
    assert {dict(r.headers)["spinewatch-source-topic"] for r in letters} == {
        alerting.drift_topic.encode()
    }
    # Everything on the audit topic (duplicates included: read until quiet).
    records = await consume(kafka_bootstrap, alerting.alerts_topic, 10_000, timeout_s=3)
    assert len({json.loads(r.value)["id"] for r in records if r.value}) == 2 + sentinels
    # The audit log is at least once (a timed-out send may have landed):
    # distinct transition ids, in order, are what happened.
    audit = [json.loads(r.value) for r in records if r.value]
    drift = [a for a in audit if not a["fingerprint"].startswith("sentinel.")]
    transitions = [a["transition"] for a in {a["id"]: a for a in drift}.values()]
    assert transitions == ["firing", "resolved"]
