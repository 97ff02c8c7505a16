"""End-to-end: look-back lists and chart resets in a real worker process.

A site whose leakage odds triple signals. Its look-back list, on the
lookback topic and signed, must name exactly the cases an independent
CUSUM over the sent events gives (ids, dates, change point). A signed
`chart.reset` on the control topic restarts the chart (the statistic on
/metrics equals the CUSUM over the cases after the reset, recomputed here)
and ends the episode (`drift.in_control`); an unsigned one is dead-lettered
and counted, never applied. A worker killed and started again applies the
reset before it announces anything, and announces no signal from before it.
"""

from __future__ import annotations

import asyncio
import json
import math
import urllib.request
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from spinewatch.adapters.kafka_clients import started
from spinewatch.adapters.message_signing import Keyring, TopicKind
from spinewatch.contracts import Indication, ProcedureType
from spinewatch.contracts.control import ChartReset
from spinewatch.contracts.drift import DriftSignalled
from spinewatch.contracts.lookback import DriftLookback
from spinewatch.demo.synthetic.cohort import SiteProfile, generate_cohort
from tests.conftest import SettingsFactory
from tests.support import (
    TEST_SIGNING_KEY,
    Sample,
    consume,
    produce,
    scaled,
    scrape_async,
    value,
    wait_until,
)
from tests.workers import WorkerProcess

pytestmark = pytest.mark.e2e

LEAKAGE = "cement_leakage_rate_per_level"
P0 = 3 / 28  # seed 000: 3 of 28 treated levels leaked (PVP, hemangioma)
SITE = "drifting"
CHART = {"site": SITE, "metric": LEAKAGE, "direction": "worse"}
KEYRING = Keyring(TEST_SIGNING_KEY.encode())

Case = tuple[datetime, uuid.UUID, int, int]  # performed at, procedure, leaked levels, levels


def _cases(events: Sequence[dict[str, Any]]) -> list[Case]:
    """The chart's cases from the sent events, written without the engine: each
    procedure's latest version, its imaged levels and the ones that leaked."""
    latest: dict[str, dict[str, Any]] = {}
    for event in events:
        if event["event_type"] != "procedure.performed" or event["site_id"] != SITE:
            continue
        seen = latest.get(event["procedure_id"])
        if seen is None or (event["recorded_at"], event["event_id"]) > (
            seen["recorded_at"],
            seen["event_id"],
        ):
            latest[event["procedure_id"]] = event
    cases = []
    for procedure in latest.values():
        imaged = [
            lv
            for lv in procedure["levels"]
            if lv.get("leakage_imaging") not in (None, "not_assessed")
        ]
        if imaged:
            leaked = sum(1 for lv in imaged if lv.get("leakages"))
            at = datetime.fromisoformat(procedure["occurred_at"]).astimezone(UTC)
            cases.append((at, uuid.UUID(procedure["procedure_id"]), leaked, len(imaged)))
    return sorted(cases, key=lambda c: (c[0], c[1].bytes))


def _cusum(
    cases: Sequence[Case], odds_ratio: float, limit: float
) -> list[tuple[Case, float, bool, int | None]]:
    """Steiner's CUSUM by its formula: per case, (case, statistic after it, signalled,
    index of the case where the statistic last left zero, for a signal)."""
    statistic, left_zero = 0.0, 0
    out: list[tuple[Case, float, bool, int | None]] = []
    for index, case in enumerate(cases):
        _, _, leaked, levels = case
        weight = leaked * math.log(odds_ratio) - levels * math.log(1 - P0 + odds_ratio * P0)
        if statistic == 0.0:
            left_zero = index
        after = max(statistic + weight, 0.0)
        if after >= limit:
            out.append((case, after, True, left_zero))
            statistic = 0.0
        else:
            out.append((case, after, False, None))
            statistic = after
    return out


async def _messages(bootstrap: str, topic: str) -> list[tuple[bytes, bytes, Any]]:
    records = await consume(bootstrap, topic, 1_000_000, timeout_s=2)
    return [(r.key, r.value, r.headers) for r in records if r.value is not None]


async def _topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
    finally:
        await admin.close()
    ((_, _, _, _, entries),) = response.resources
    return {entry[0]: entry[1] for entry in entries}


async def _json(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [json.loads(v) for _, v, _ in await _messages(bootstrap, topic)]


async def _publish(bootstrap: str, topic: str, reset: ChartReset, *, signed: bool) -> None:
    key, value = reset.site_id.encode(), reset.model_dump_json().encode()
    headers = [KEYRING.sign(TopicKind.CONTROL, key, value)] if signed else []
    async with started(AIOKafkaProducer(bootstrap_servers=bootstrap)) as producer:
        await producer.send_and_wait(topic, value, key=key, headers=headers)


def _reset(effective_after: datetime) -> ChartReset:
    return ChartReset(
        event_type="chart.reset",
        schema_version=1,
        reset_id=uuid.uuid4(),
        site_id=SITE,
        metric=LEAKAGE,
        direction="worse",
        effective_after=effective_after,
        fingerprint="a" * 32,
        finding="process_issue_action_taken",
        requested_by="quality.lead",
        requested_at=datetime.now(UTC),
    )


def _readiness(worker: WorkerProcess) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{worker.url}/readyz", timeout=scaled(2)) as response:  # noqa: S310
            body: dict[str, Any] = json.loads(response.read())
            return body
    except OSError:
        return {}


def _check_ok(readiness: dict[str, Any], name: str) -> bool:
    return any(c.get("name") == name and c.get("ok") for c in readiness.get("checks", []))


async def test_look_back_reset_and_restart(
    make_settings: SettingsFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    hemangioma = {(ProcedureType.PVP, Indication.HEMANGIOMA): 1.0}
    site = SiteProfile(SITE, 420, hemangioma, leakage_odds_ratio=3.0, drift_after=150)
    cohort = generate_cohort(13, [site], duplicate_share=0.02, retractions=0, malformed=0)
    cases = _cases(cohort.events)
    settings = make_settings(
        drift_interval_s=0.2,
        followup_schedule=(),
        drift_metrics=(LEAKAGE,),
        drift_vas_timepoints=(),
        silence_watch=False,
        data_dir=tmp_path / "worker",
    )
    worker = WorkerProcess(settings)
    worker.start()
    try:
        await worker.wait_for_partitions(60)
        # Resets are folded on every rebuild: the worker created the control
        # topic to keep them for good, not for the broker's default retention.
        config = await _topic_config(kafka_bootstrap, settings.topics.control)
        assert config.get("retention.ms") == "-1"
        await produce(kafka_bootstrap, settings.events_topic, cohort.deliveries)

        async def charted() -> dict[Sample, float]:
            return await scrape_async(f"{worker.url}/metrics")

        # Every case on the chart, at the site's own design (no design pending).
        scraped = await wait_until(
            charted,
            lambda s: (
                value(s, "spinewatch_drift_chart_cases", **CHART) == len(cases)
                and value(s, "spinewatch_drift_design_pending") == 0
            ),
            40,
            "every case charted at the site's design",
        )
        limit = value(scraped, "spinewatch_drift_chart_limit", **CHART)
        expected = _cusum(cases, 2.0, limit)
        signal_at = [i for i, (_, _, signalled, _) in enumerate(expected) if signalled]
        assert signal_at, "tripled leakage odds were not signalled"
        latest = signal_at[-1]
        assert len(cases) - 1 - latest < settings.drift_resolve_after_cases, "episode closed"

        # The latest signal (always announced) and its look-back list.
        async def latest_signal() -> DriftSignalled | None:
            for m in await _json(kafka_bootstrap, settings.drift_topic):
                if m["event_type"] == "drift.signalled" and m["case_number"] == latest + 1:
                    found = DriftSignalled.model_validate_json(json.dumps(m))
                    if found.limit == limit:
                        return found
            return None

        signal = await wait_until(latest_signal, bool, 30, "the latest signal")
        assert signal is not None

        async def its_lookback() -> list[tuple[bytes, bytes, Any]]:
            return [
                m
                for m in await _messages(kafka_bootstrap, settings.topics.lookback)
                if json.loads(m[1])["signal_id"] == str(signal.signal_id)
            ]

        (key, raw, headers), *_ = await wait_until(its_lookback, bool, 20, "the look-back list")
        assert KEYRING.verify(TopicKind.LOOKBACK, key, raw, headers) is None
        listed = DriftLookback.model_validate_json(raw)
        run_start = signal_at[-2] + 1 if len(signal_at) > 1 else 0
        change_point = expected[latest][3]
        assert change_point is not None
        want = [
            (case[1], case[0].date(), index + 1, index >= change_point, statistic)
            for index, (case, statistic, _, _) in enumerate(expected)
            if run_start <= index <= latest
        ]
        got = [
            (c.procedure_id, c.performed_on, c.case_number, c.since_change_point, c.statistic)
            for c in listed.cases
        ]
        assert got == want
        assert listed.omitted == 0
        assert listed.restarted_on == (expected[run_start - 1][0][0].date() if run_start else None)
        # The drift topic itself names no procedure.
        drift_raw = b"".join(
            v for _, v, _ in await _messages(kafka_bootstrap, settings.drift_topic)
        )
        assert not [c for c in cases if str(c[1]).encode() in drift_raw]

        # A signed reset after the signal restarts the chart: the first point
        # after it where a restart moves the statistic without a new signal.
        without_reset = 0.0 if expected[-1][2] else expected[-1][1]
        for middle in range(latest + 1, len(cases) - 1):
            effective_after = cases[middle][0]
            restarted = _cusum([c for c in cases if c[0] > effective_after], 2.0, limit)
            if not any(r[2] for r in restarted) and restarted[-1][1] != without_reset:
                want_statistic = restarted[-1][1]
                break
        else:
            pytest.fail("no reset point moves the chart's statistic: choose another cohort")
        reset = _reset(effective_after)
        await _publish(kafka_bootstrap, settings.topics.control, reset, signed=True)

        async def in_control() -> list[dict[str, Any]]:
            return [
                m
                for m in await _json(kafka_bootstrap, settings.drift_topic)
                if m["event_type"] == "drift.in_control" and m["signal_id"] == str(signal.signal_id)
            ]

        (ended, *more) = await wait_until(in_control, bool, 20, "the episode's return to control")
        assert not more
        assert ended["in_control_on"] == effective_after.date().isoformat()
        scraped = await charted()
        assert value(scraped, "spinewatch_drift_chart_statistic", **CHART) == want_statistic
        assert value(scraped, "spinewatch_drift_chart_state", **CHART) == 0
        assert value(scraped, "spinewatch_drift_chart_resets", **CHART) == 1
        assert value(scraped, "spinewatch_chart_resets_applied_total", **CHART) == 1

        # An unsigned reset (earlier: it would change the chart) is dead-lettered, counted.
        forged = _reset(cases[latest - 5][0])
        await _publish(kafka_bootstrap, settings.topics.control, forged, signed=False)

        async def rejected() -> float:
            return value(
                await charted(), "spinewatch_control_messages_rejected_total", reason="unsigned"
            )

        await wait_until(rejected, lambda n: n == 1, 20, "the forged reset counted")
        (letter,) = await consume(kafka_bootstrap, settings.deadletter_topic, 1, timeout_s=5)
        headers = dict(letter.headers)
        assert headers["spinewatch-reason"] == b"unsigned"
        assert headers["spinewatch-source-topic"] == settings.topics.control.encode()
        scraped = await charted()
        assert value(scraped, "spinewatch_drift_chart_statistic", **CHART) == want_statistic
        assert value(scraped, "spinewatch_drift_chart_resets", **CHART) == 1
        drift_before = await _json(kafka_bootstrap, settings.drift_topic)
        lookbacks_before = len(await _messages(kafka_bootstrap, settings.topics.lookback))

        # Killed and started again: the reset holds, nothing before it is announced again.
        worker.kill()
        worker.stop()
        worker = WorkerProcess(settings)
        worker.start()
        await worker.wait_for_partitions(60)

        async def re_announced() -> list[dict[str, Any]]:
            return (await _json(kafka_bootstrap, settings.drift_topic))[len(drift_before) :]

        def ended_again(new: list[dict[str, Any]]) -> bool:
            return any(m.get("signal_id") == str(signal.signal_id) for m in new)

        new = await wait_until(re_announced, ended_again, 40, "the re-announced end of episode")
        assert not [m for m in new if m["event_type"] == "drift.signalled"]
        assert len(await _messages(kafka_bootstrap, settings.topics.lookback)) == lookbacks_before
        # /metrics is a rendering: read it once one has followed the recovery
        # and the site is charted at its own design again (as before the kill).
        await wait_until(
            lambda: asyncio.to_thread(_readiness, worker),
            lambda ready: _check_ok(ready, "metrics-rendered"),
            30,
            "a rendering after the recovery",
        )
        scraped = await wait_until(
            charted,
            lambda s: (
                value(s, "spinewatch_drift_chart_cases", **CHART) == len(cases)
                and value(s, "spinewatch_drift_design_pending") == 0
            ),
            40,
            "every case charted again after the restart",
        )
        assert value(scraped, "spinewatch_drift_chart_statistic", **CHART) == want_statistic
        assert value(scraped, "spinewatch_drift_chart_resets", **CHART) == 1
        # The forged reset is counted again, but lettered only when it arrived.
        assert value(scraped, "spinewatch_control_messages_rejected_total", reason="unsigned") == 1
        letters = await consume(kafka_bootstrap, settings.deadletter_topic, 2, timeout_s=2)
        assert len(letters) == 1
        assert _check_ok(await asyncio.to_thread(_readiness, worker), "control")
    finally:
        worker.stop()
