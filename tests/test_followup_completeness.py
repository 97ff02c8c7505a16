"""Follow-up completeness: states, windows, Clark's C, the chart and the pessimistic figures."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from spinewatch.adapters.state_codec import encode_facts
from spinewatch.baselines import load_catalog
from spinewatch.contracts import Indication, ProcedureType, parse_event
from spinewatch.contracts.drift import (
    DriftCompleteness,
    DriftSignalled,
    LocalTarget,
    TimepointCompleteness,
)
from spinewatch.contracts.vocabulary import FollowupTimepoint
from spinewatch.demo.synthetic.cohort import SiteProfile, encode, generate_cohort
from spinewatch.domain.drift.cusum import new_chart, observe
from spinewatch.domain.drift.events import build, pending
from spinewatch.domain.drift.vas_drift import design_vas_charts
from spinewatch.domain.followup.book import CompletenessDesign, FollowupBook
from spinewatch.domain.followup.chart import completeness_chart, volume_step
from spinewatch.domain.followup.completeness import (
    ProcedurePlan,
    lost_tallies,
    plan_of,
    summarise,
)
from spinewatch.domain.followup.pessimistic import with_pessimistic
from spinewatch.domain.followup.schedule import (
    DAY_US,
    DEFAULT_SCHEDULE,
    WINDOWS,
    schedule_windows,
    state_of,
)
from spinewatch.domain.followup.vas_pessimism import pessimistic_vas
from spinewatch.domain.outcomes.contribution import VAS_SCALE
from spinewatch.domain.outcomes.facts import fact_of
from spinewatch.domain.outcomes.partition import rebuilt
from spinewatch.domain.outcomes.report import cohort_report
from spinewatch.engine.bootstrap import outcome_engine
from spinewatch.engine.settings import Settings
from tests.followup_cohorts import in_clinical_order, site_events
from tests.test_alerting import Webhook, _deliver_until, _service, _signal

POST, WEEK_1 = WINDOWS["post_procedure"], WINDOWS["week_1"]
T0 = 1_750_000_000 * 1_000_000


def _day(days: float) -> int:
    return T0 + round(days * DAY_US)


# --- states and windows -------------------------------------------------------------


def test_a_follow_up_moves_pending_due_overdue_lost_as_the_clock_passes_its_window() -> None:
    states = [state_of(POST, T0, None, _day(d)) for d in (0.5, 1, 6.9, 7, 29.9, 30)]
    assert states == ["pending", "due", "due", "overdue", "overdue", "lost"]


def test_received_in_time_late_or_not_yet_as_of_the_instant() -> None:
    assert state_of(POST, T0, _day(2), _day(40)) == "received"
    assert state_of(POST, T0, _day(8), _day(40)) == "received_late"  # after day 3 + 4 grace
    assert state_of(POST, T0, _day(35), _day(40)) == "received_late"  # even once lost
    assert state_of(POST, T0, _day(35), _day(31)) == "lost"  # not yet recorded then


def test_a_dead_patient_missing_follow_up_is_censored_not_overdue() -> None:
    assert state_of(POST, T0, None, _day(40), censored=True) == "censored"
    assert state_of(POST, T0, _day(2), _day(40), censored=True) == "received"


def test_post_procedure_window_is_seed_000s_24_to_72_hours() -> None:
    assert (POST.opens_day, POST.closes_day) == (1, 3)


def test_final_and_other_have_no_window_to_schedule() -> None:
    for timepoint in ("final", "other"):
        with pytest.raises(ValueError, match="no fixed window"):
            schedule_windows([timepoint])
    assert [w.timepoint for w in schedule_windows(["month_3", "week_1"])] == ["week_1", "month_3"]


def test_the_default_schedule_is_what_the_demo_sends_inside_its_windows() -> None:
    cohort = generate_cohort(
        3, [SiteProfile("demo", 300, {(ProcedureType.PVP, Indication.HEMANGIOMA): 1.0})]
    )
    procedures = {
        e["procedure_id"]: datetime.fromisoformat(e["occurred_at"])
        for e in cohort.events if e["event_type"] == "procedure.performed"
    }  # fmt: skip
    sent: dict[str, int] = {}
    for event in cohort.events:
        if event["event_type"] != "followup.recorded" or event["timepoint"] == "final":
            continue
        sent[event["timepoint"]] = sent.get(event["timepoint"], 0) + 1
        window = WINDOWS[event["timepoint"]]
        start = procedures[event["procedure_id"]]
        visit = (datetime.fromisoformat(event["occurred_at"]) - start).total_seconds() / 86_400
        recorded = (datetime.fromisoformat(event["recorded_at"]) - start).total_seconds() / 86_400
        assert window.opens_day <= visit <= window.closes_day + 1  # the visit's hours
        assert recorded < window.overdue_day
    assert set(sent) == set(DEFAULT_SCHEDULE)


# --- completeness and Clark's C ---------------------------------------------------------


def _plan(start_day: float, received: dict[str, float], censored: bool = False) -> ProcedurePlan:
    return ProcedurePlan(
        "north", "pvp", "hemangioma", None, _day(start_day),
        7000, {tp: _day(start_day + d) for tp, d in received.items()}, censored,
    )  # fmt: skip


def test_completeness_and_clarks_c_of_a_hand_computed_site() -> None:
    """As of day 20: A received both, B only post-procedure, C (4 days ago) only
    post-procedure, D died without any follow-up.

    week_1 (horizon 7 days): potential A 7, B 7, C 4, D 0 (censored at last
    contact); observed A 7, B 2, C 2, D 0: C = 11/18. Closed (17 days passed):
    A and B, 1 received: completeness 1/2 (C: window not open). post_procedure (horizon 2):
    C = 6/6; closed (7 days) A, B: 2/2.
    """
    plans = [
        _plan(0, {"post_procedure": 2, "week_1": 7}),
        _plan(0, {"post_procedure": 2}),
        _plan(16, {"post_procedure": 2}),
        _plan(0, {}, censored=True),
    ]
    summaries = summarise(plans, schedule_windows(DEFAULT_SCHEDULE), _day(20))
    week_1, post = summaries["week_1"], summaries["post_procedure"]
    assert week_1.clarks_c == pytest.approx(11 / 18)
    assert (week_1.closed, week_1.closed_received, week_1.completeness) == (2, 1, 0.5)
    assert week_1.counts == {"received": 1, "overdue": 1, "pending": 1, "censored": 1}
    assert post.clarks_c == pytest.approx(1.0)
    assert (post.closed, post.completeness) == (2, 1.0)


def _records(events: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    parsed = [parse_event(encode(e)) for e in events]
    return rebuilt([[(e.procedure_id.bytes, fact_of(e)) for e in parsed]]).records


def test_a_plan_is_read_from_the_record_and_a_death_censors_it() -> None:
    events = site_events("north", 1, lambda _: 1.0, seed=1)
    pid = uuid.UUID(events[0]["procedure_id"]).bytes
    plan = plan_of(_records(events)[pid])
    assert plan is not None
    assert set(plan.received) == {"post_procedure", "week_1"}
    assert not plan.censored
    death = events[0] | {
        "event_id": str(uuid.uuid4()), "event_type": "complication.reported",
        "category": "death", "severity": "fatal", "relatedness": "unrelated",
        "days_after_procedure": 5,
    }  # fmt: skip
    for key in ("procedure_type", "indication", "levels", "pre_vas", "histology",
                "neurological_deficit_at_presentation", "biopsy_taken", "operator_ref", "anesthesia"):  # fmt: skip
        death.pop(key)
    censored = plan_of(_records([*events, death])[pid])
    assert censored is not None
    assert censored.censored


# --- pessimistic figures ---------------------------------------------------------------


def test_lost_follow_ups_count_as_non_responders_and_no_relief() -> None:
    """Two patients came back with relief 8 -> 2 and 6 -> 1; two were lost."""
    tally = {
        "patients": 4,
        "responder_eligible.post_procedure": 2,
        "responders.post_procedure": 2,
        "vas_change.post_procedure.n": 2,
        "vas_change.post_procedure.sum": -11 * VAS_SCALE,
        "vas_change.post_procedure.sumsq": (36 + 25) * VAS_SCALE**2,
    }
    plans = [_plan(0, {}), _plan(0, {})]
    lost = lost_tallies(plans, schedule_windows(["post_procedure"]), _day(31))
    (only,) = lost.values()
    assert only == {
        "vas_change_lost.post_procedure": 2,
        "responder_eligible_lost.post_procedure": 2,
    }
    rows = {
        (r.metric, r.timepoint): r
        for r in cohort_report(with_pessimistic(tally | only), ProcedureType.PVP,
                               Indication.HEMANGIOMA, load_catalog())
    }  # fmt: skip
    assert rows[("responder_rate", "post_procedure")].value == 1.0
    assert rows[("responder_rate_pessimistic", "post_procedure")].value == 0.5
    assert rows[("vas_change", "post_procedure")].value == -5.5
    assert rows[("vas_change_pessimistic", "post_procedure")].value == pytest.approx(-11 / 4)
    # Overdue is not lost yet: nothing imputed.
    assert lost_tallies(plans, schedule_windows(["post_procedure"]), _day(10)) == {}


# --- the chart -------------------------------------------------------------------------


def test_the_chart_is_the_bernoulli_cusum_over_closed_follow_ups_in_close_order() -> None:
    events = site_events("north", 240, lambda i: 0.9 if i < 120 else 0.4, seed=5)
    records = _records(in_clinical_order(events))
    design = CompletenessDesign(schedule_windows(DEFAULT_SCHEDULE), 0.8, 2.0, 60.0)
    book = FollowupBook(design)
    book.track(records, records.keys())
    book.refresh()
    charts = book.charts["north"]
    chart = charts.charts[0]
    # By definition: every closed scheduled follow-up in order of its close.
    watermark = book.clocks["north"]
    cases = []
    for pid, record in records.items():
        plan = plan_of(record)
        assert plan is not None
        for index, window in enumerate(design.windows):
            close = plan.procedure_us + window.overdue_day * DAY_US
            if close <= watermark:
                cases.append(
                    ((close, pid + bytes((index,))), window.timepoint not in plan.received)
                )
    state = new_chart(2.0, chart.design.limit)
    for _, missed in sorted(cases):
        state = observe(state, int(missed), 1, 0.2)
    folded = charts.tracks[0].state
    assert (folded.cases, folded.statistic, len(folded.signals)) == (
        state.cases, state.statistic, len(state.signals),
    )  # fmt: skip
    assert state.signals, "a return rate of 40% after 90% is not signalled"
    first = state.signals[0]
    assert first.case_index > 240  # not before the drop (2 follow-ups per procedure)
    # Designed for the site's own volume: 2 procedures a day, 2 follow-ups each.
    months = (watermark - min(c[0][0] for c in cases)) / DAY_US / 30.4375
    assert chart == completeness_chart(0.8, 2.0, 60.0, volume_step(len(cases) / months))


def test_a_late_follow_up_turns_its_case_back_to_received() -> None:
    events = site_events("north", 120, lambda _: 1.0, seed=6)
    ordered = in_clinical_order(events)
    late = next(
        e
        for e in ordered
        if e["timepoint" if "timepoint" in e else "event_type"] == "post_procedure"
    )
    others = [e for e in ordered if e is not late]
    design = CompletenessDesign(schedule_windows(DEFAULT_SCHEDULE), 0.8, 2.0, 60.0)
    book = FollowupBook(design)
    records = _records(others)
    book.track(records, records.keys())
    book.refresh()
    assert sum(o == (1, 1) for o in book.cases["north"].values()) == 1
    records = _records([*others, late | {"recorded_at": ordered[-1]["recorded_at"]}])
    book.track(records, [uuid.UUID(late["procedure_id"]).bytes])
    book.refresh()
    assert sum(o == (1, 1) for o in book.cases["north"].values()) == 0
    ((_, summaries),) = book.summaries()
    assert summaries["post_procedure"].counts.get("received_late") == 1
    assert summaries["post_procedure"].completeness == 1.0


# --- a VAS alarm under the pessimistic assumption ------------------------------------


def test_pessimistic_vas_counts_lost_follow_ups_as_no_relief() -> None:
    (chart,) = design_vas_charts(load_catalog(), ["post_procedure"], 1.0, 1000.0)
    stratum = ("pvp", "hemangioma")
    published = chart.strata[stratum]
    mean, holds = pessimistic_vas(chart, [(stratum, -2.0), (stratum, -4.0)], [stratum, stratum])
    assert mean == pytest.approx(-6.0 / 4)
    z = [(c - published.mean_change) / published.sd_change for c in (-2.0, -4.0, 0.0, 0.0)]
    assert holds is (sum(z) / 4 >= chart.design.reference)
    assert pessimistic_vas(chart, [], []) == (None, None)


def test_a_vas_signal_says_whether_it_holds_when_lost_follow_ups_had_no_relief(
    tmp_path: Path,
) -> None:
    """Poor relief (post-procedure VAS 6) at a site that loses half its follow-ups."""
    events = site_events("north", 200, lambda _: 0.5, seed=8)
    for event in events:
        if event.get("timepoint") == "post_procedure":
            event["vas"] = 6.0
    facts = [(e.procedure_id.bytes, fact_of(e))
             for e in (parse_event(encode(e)) for e in in_clinical_order(events))]  # fmt: skip
    settings = Settings(
        embedded_broker=True,
        drift_metrics=(),
        drift_vas_timepoints=("post_procedure",),
        data_dir=tmp_path,
    )
    # Site designs calibrated in this thread: the site's charts exist at once.
    engine = outcome_engine(CollectorRegistry(), settings, background=False)
    engine.apply({}, 0, 0, encode_facts(facts))  # as the apply agent does, one batch
    engine.refresh_drift({0})
    assert any(
        isinstance(m, DriftSignalled) and m.metric == "vas_change_post_procedure"
        for _, m in engine.drift.take_outbox()
    ), "poor relief is not signalled"
    # Every signal of the chart's history, as the monitor annotates it (the
    # outbox holds only the latest episode once the site's design is in, and
    # the early signals are the ones whose follow-ups are lost by now).
    site = engine.drift.partitions[0].sites["north"]
    annotate = engine.drift.annotate
    assert annotate is not None
    vas = []
    for item in pending("north", site, settings.drift_resolve_after_cases):
        message = build(item, site)
        if isinstance(message, DriftSignalled) and message.metric == "vas_change_post_procedure":
            annotated = annotate("north", item, site, message)
            assert isinstance(annotated, DriftSignalled)
            vas.append(annotated)
    for signal in vas:
        observed, pessimistic = signal.observed_mean_change, signal.pessimistic_mean_change
        assert observed is not None
        assert pessimistic is not None
        # Lost patients add zeros: the mean moves from the observed one towards 0.
        assert min(observed, 0.0) <= pessimistic <= max(observed, 0.0)
        # Far less relief than published (-5.7) either way: the alarm holds.
        assert signal.holds_under_pessimistic is True
    assert any(s.observed_mean_change != s.pessimistic_mean_change for s in vas)


# --- what on-call staff get ------------------------------------------------------------


async def test_a_completeness_signal_pages_a_warning_naming_the_local_target_reports_do_not(
    redis_url: str,
) -> None:
    webhook = Webhook()
    await webhook.start()
    signal = _signal().model_copy(
        update={
            "metric": "followup_completeness", "unit": "patient", "baselines": (),
            "observed_events": 21, "expected_events": 9.8, "cases_since_change": 49,
            "local_target": LocalTarget(
                setting="SPINEWATCH_FOLLOWUP_EXPECTED_COMPLETENESS", expected=0.8, p0=0.2,
                described="expected follow-up completeness, a local target",
            ),
        }
    )  # fmt: skip
    report = DriftCompleteness(
        event_type="drift.completeness", schema_version=1, report_id=uuid.uuid4(),
        site_id="riverside", as_of=date(2025, 6, 30), expected_completeness=0.8,
        timepoints=(TimepointCompleteness(
            timepoint=FollowupTimepoint.POST_PROCEDURE, pending=2, due=4, received=300,
            received_late=3, overdue=20, lost=60, censored=1, closed=383,
            completeness=303 / 383, clarks_c=0.79,
        ),),
    )  # fmt: skip
    try:
        async with _service(redis_url, webhook) as service:
            assert await service.handle(report.model_dump_json().encode()) is None
            assert await service.handle(signal.model_dump_json().encode()) == "transition"
            await _deliver_until(service, webhook, 1)
            await service.deliver_due()
            (page,) = webhook.received
            assert page["text"].startswith("[FIRING] [warning] riverside: followup_completeness")
            assert "21 missed vs 9.8 expected over the last 49 scheduled cases" in page["text"]
            assert "local target SPINEWATCH_FOLLOWUP_EXPECTED_COMPLETENESS=0.8" in page["text"]
            counted = {
                s.labels["outcome"]: s.value
                for metric in service.registry.collect()
                for s in metric.samples
                if s.name == "spinewatch_drift_messages_total"
            }
            assert counted == {"informational": 1.0, "transition": 1.0}
    finally:
        await webhook.stop()
