"""End-to-end: a site whose follow-up return rate drops from 90% to 50%, in a real worker.

Two sites of PVP for hemangioma send follow-ups at 90%; at one of them the
return rate drops to 50% halfway. The patients who come back have seed
000-like pain relief at both. The worker must signal the drop on the
completeness chart (drift.signalled, metric followup_completeness, with
the local target instead of a citation), while the dropping site's VAS
charts stay quiet under complete-case analysis; /metrics must give each
site's completeness as counted here independently from the events, and
the pessimistic VAS change next to the complete-case one.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from spinewatch.contracts.drift import DriftCompleteness, DriftSignalled
from spinewatch.demo.synthetic.cohort import encode
from spinewatch.domain.followup.schedule import DEFAULT_SCHEDULE, WINDOWS
from tests.conftest import SettingsFactory
from tests.followup_cohorts import in_clinical_order, site_events
from tests.support import Sample, consume, produce, running_worker, scrape_async, value, wait_until

pytestmark = pytest.mark.e2e

PROCEDURES = 600
DROP_AT = 300  # procedures, 12 h apart: day 150


def _cohort() -> list[dict[str, Any]]:
    dropping = site_events("dropping", PROCEDURES, lambda i: 0.9 if i < DROP_AT else 0.5, seed=11)
    steady = site_events("steady", PROCEDURES, lambda _: 0.9, seed=11)
    return in_clinical_order(dropping + steady)


def _us(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return round(moment.timestamp()) * 1_000_000 + moment.microsecond


def _expected_completeness(events: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(closed, received) per site and timepoint, counted from the events alone."""
    procedures = {e["procedure_id"]: e for e in events if e["event_type"] == "procedure.performed"}
    followups = {
        (e["procedure_id"], e["timepoint"])
        for e in events
        if e["event_type"] == "followup.recorded"
    }
    # Each site's clock: its latest procedure time or follow-up recording time.
    clock: dict[str, int] = {}
    for e in events:
        instant = e["occurred_at"] if e["event_type"] == "procedure.performed" else e["recorded_at"]
        clock[e["site_id"]] = max(clock.get(e["site_id"], 0), _us(instant))
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    for pid, procedure in procedures.items():
        for timepoint in DEFAULT_SCHEDULE:
            close = _us(procedure["occurred_at"]) + WINDOWS[timepoint].overdue_day * 86_400_000_000
            if close <= clock[procedure["site_id"]]:
                key = (procedure["site_id"], timepoint)
                closed, received = counts.get(key, (0, 0))
                counts[key] = (closed + 1, received + ((pid, timepoint) in followups))
    return counts


async def _drift(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    records = await consume(bootstrap, topic, 1_000_000, timeout_s=3)
    return [json.loads(r.value) for r in records if r.value is not None]


async def test_a_site_whose_follow_ups_stop_coming_is_signalled_while_its_vas_stays_quiet(
    make_settings: SettingsFactory, kafka_bootstrap: str
) -> None:
    events = _cohort()
    drop_day = datetime.fromisoformat(
        sorted(e["occurred_at"] for e in events
               if e["event_type"] == "procedure.performed" and e["site_id"] == "dropping")[DROP_AT]
    ).date()  # fmt: skip
    expected = _expected_completeness(events)
    # One partition: both sites' events interleave in one stream, and one
    # site's clock must not run ahead for the other.
    settings = make_settings(drift_interval_s=0.2, partitions=1)

    async with running_worker(settings, kafka_bootstrap) as worker:
        await produce(kafka_bootstrap, settings.events_topic, [encode(e) for e in events])

        async def closed() -> dict[Sample, float]:
            return await scrape_async(f"{worker.metrics.url}/metrics")

        def all_counted(samples: dict[Sample, float]) -> bool:
            applied = value(samples, "spinewatch_events_applied_total") == len(events)
            return applied and all(
                value(samples, "spinewatch_followup_closed", site=s, timepoint=t) == n
                for (s, t), (n, _) in expected.items()
            )

        scraped = await wait_until(closed, all_counted, 90, "every closed follow-up counted")

        async def signals() -> list[DriftSignalled]:
            return [
                DriftSignalled.model_validate_json(json.dumps(m))
                for m in await _drift(kafka_bootstrap, settings.drift_topic)
                if m["event_type"] == "drift.signalled"
            ]

        published = await wait_until(
            signals,
            lambda found: any(s.metric == "followup_completeness" for s in found),
            60,
            "the completeness signal",
        )
        messages = await _drift(kafka_bootstrap, settings.drift_topic)

    # A restarted worker rebuilds the books from the changelog: the same
    # completeness figures, and the chart's latest signal under the same id.
    latest = max(
        (s for s in published if s.metric == "followup_completeness"), key=lambda s: s.case_number
    )
    before = sum(1 for m in messages if m.get("signal_id") == str(latest.signal_id))
    async with running_worker(settings, kafka_bootstrap) as restarted:

        async def announced() -> int:
            again = await _drift(kafka_bootstrap, settings.drift_topic)
            return sum(1 for m in again if m.get("signal_id") == str(latest.signal_id))

        await wait_until(announced, lambda n: n > before, 60, "the re-announced signal")
        rescraped = await scrape_async(f"{restarted.metrics.url}/metrics")
    followup = {k: v for k, v in scraped.items() if k[0].startswith("spinewatch_followup_")}
    assert followup
    assert {k: v for k, v in rescraped.items() if k in followup} == followup

    # Completeness per site and timepoint, as counted from the events.
    for (site, timepoint), (n, received) in expected.items():
        labels = {"site": site, "timepoint": timepoint}
        assert value(scraped, "spinewatch_followup_completeness_ratio", **labels) == pytest.approx(
            received / n
        )
    assert value(scraped, "spinewatch_followup_completeness_ratio",
                 site="dropping", timepoint="post_procedure") < 0.8  # fmt: skip
    assert value(scraped, "spinewatch_followup_completeness_ratio",
                 site="steady", timepoint="post_procedure") > 0.85  # fmt: skip

    # The completeness chart signals the dropping site only, after the drop,
    # against the local target.
    completeness = [s for s in published if s.metric == "followup_completeness"]
    assert {s.site_id for s in completeness} == {"dropping"}
    first = min(completeness, key=lambda s: s.case_number)
    assert first.signalled_on >= drop_day
    assert first.local_target is not None
    assert first.local_target.expected == pytest.approx(0.8)
    assert first.baselines == ()
    assert first.observed_events is not None
    assert first.expected_events is not None
    assert first.observed_events > first.expected_events
    assert value(scraped, "spinewatch_drift_chart_state", site="dropping",
                 metric="followup_completeness", direction="worse") == 1  # fmt: skip
    assert value(scraped, "spinewatch_drift_chart_state", site="steady",
                 metric="followup_completeness", direction="worse") == 0  # fmt: skip

    # Its VAS charts stay quiet under complete-case analysis: the patients who
    # came back had published-like relief.
    vas = [s for s in published if s.metric.startswith("vas_change")]
    assert vas == []
    assert value(scraped, "spinewatch_drift_chart_cases", site="dropping",
                 metric="vas_change_post_procedure", direction="worse") > 300  # fmt: skip
    assert value(scraped, "spinewatch_drift_signals", site="dropping",
                 metric="vas_change_post_procedure", direction="worse") == 0  # fmt: skip
    row = {"site": "dropping", "procedure": "pvp", "indication": "hemangioma",
           "operator": "all", "timepoint": "post_procedure"}  # fmt: skip
    complete_case = value(scraped, "spinewatch_vas_mean_score", metric="vas_change", **row)
    pessimistic = value(
        scraped, "spinewatch_vas_mean_score", metric="vas_change_pessimistic", **row
    )
    assert complete_case == pytest.approx(1.7 - 7.4, abs=0.4)
    assert complete_case < pessimistic < 0  # lost patients counted as no relief
    responders = value(scraped, "spinewatch_outcome_rate_ratio", metric="responder_rate", **row)
    worst = value(
        scraped, "spinewatch_outcome_rate_ratio", metric="responder_rate_pessimistic", **row
    )
    assert worst < responders

    # Completeness reports on the drift topic: counts only, as of clinical Mondays.
    reports = [DriftCompleteness.model_validate_json(json.dumps(m)) for m in messages
               if m["event_type"] == "drift.completeness" and m["site_id"] == "dropping"]  # fmt: skip
    assert reports
    newest = max(reports, key=lambda r: r.as_of)
    assert newest.as_of.weekday() == 0
    post = next(t for t in newest.timepoints if t.timepoint == "post_procedure")
    assert post.completeness is not None
    assert post.completeness < 0.8
    assert post.clarks_c is not None
    raw = json.dumps(messages)
    for event in events[:200]:
        assert event["procedure_id"] not in raw
        assert event["patient_ref"] not in raw
