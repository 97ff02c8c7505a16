"""Synthetic cohort generator: valid events, reproducible bytes, faithful calibration."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from scipy import stats

from spinewatch.baselines import load_catalog
from spinewatch.baselines.model import Proportion, Share
from spinewatch.contracts import Indication, ProcedureType, Relatedness, parse_event
from spinewatch.demo.synthetic.cohort import (
    CALIBRATION,
    SiteProfile,
    SyntheticCohort,
    default_sites,
    encode,
    generate_cohort,
)
from spinewatch.errors import InvalidEvent

Event = dict[str, Any]
HEMANGIOMA_PVP = {(ProcedureType.PVP, Indication.HEMANGIOMA): 1.0}
BIG = 20_000  # procedures in the calibration cohort
DRIFT_AFTER = BIG // 2


@pytest.fixture(scope="module")
def cohort() -> SyntheticCohort:
    return generate_cohort(7, default_sites(400), malformed=3, retractions=3, late_followups=2)


@pytest.fixture(scope="module")
def drifting() -> list[Event]:
    """Procedures of one PVP/hemangioma site whose leakage odds double halfway."""
    site = SiteProfile(
        "calib", BIG, HEMANGIOMA_PVP, leakage_odds_ratio=2.0, drift_after=DRIFT_AFTER
    )
    events = generate_cohort(
        11, [site], duplicate_share=0, malformed=0, retractions=0, late_followups=0
    ).events
    return [e for e in events if e["event_type"] == "procedure.performed"]


def by_type(events: tuple[Event, ...], event_type: str) -> list[Event]:
    return [e for e in events if e["event_type"] == event_type]


def valid_deliveries(cohort: SyntheticCohort) -> list[bytes]:
    bad = set(cohort.malformed)
    return [raw for raw in cohort.deliveries if raw not in bad]


def keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from keys(inner)


def assessed_levels(procedures: list[Event]) -> tuple[int, int]:
    """(levels with a leak, levels checked for leakage): the per-level denominator."""
    levels = [
        lv for p in procedures for lv in p["levels"] if lv["leakage_imaging"] != "not_assessed"
    ]
    return sum(1 for lv in levels if lv["leakages"]), len(levels)


def catalog_value(parameter: str) -> float:
    entry = {e.id: e for e in load_catalog().baselines}[CALIBRATION[parameter]]
    assert isinstance(entry.statistic, Proportion)
    return entry.statistic.value


def test_every_distinct_event_satisfies_its_contract(cohort: SyntheticCohort) -> None:
    types = Counter(parse_event(encode(e)).event_type for e in cohort.events)
    assert set(types) == {
        "procedure.performed",
        "followup.recorded",
        "complication.reported",
        "event.retracted",
    }
    for raw in valid_deliveries(cohort):
        parse_event(raw)


def test_every_malformed_payload_is_rejected(cohort: SyntheticCohort) -> None:
    assert len(cohort.malformed) == 3
    assert all(raw in cohort.deliveries for raw in cohort.malformed)
    for raw in cohort.malformed:
        with pytest.raises(InvalidEvent):
            parse_event(raw)


def test_schema_violation_is_a_mutated_followup(cohort: SyntheticCohort) -> None:
    mutated = json.loads(cohort.malformed[0])
    assert mutated["event_type"] == "followup.recorded"
    assert isinstance(mutated["vas"], str)
    assert mutated["timepoint"] == "month_2"
    with pytest.raises(InvalidEvent) as caught:
        parse_event(cohort.malformed[0])
    assert {e.location for e in caught.value.errors} >= {"vas", "timepoint"}


def test_same_seed_gives_identical_bytes() -> None:
    first = generate_cohort(3, default_sites(120), malformed=2)
    again = generate_cohort(3, default_sites(120), malformed=2)
    assert first.deliveries == again.deliveries
    assert [encode(e) for e in first.events] == [encode(e) for e in again.events]
    assert first.malformed == again.malformed


def test_another_seed_gives_another_cohort() -> None:
    first = generate_cohort(3, default_sites(120))
    other = generate_cohort(4, default_sites(120))
    assert first.deliveries != other.deliveries
    assert not {e["event_id"] for e in first.events} & {e["event_id"] for e in other.events}


def test_counts_and_uniqueness(cohort: SyntheticCohort) -> None:
    sites = default_sites(400)
    assert len(by_type(cohort.events, "procedure.performed")) == sum(s.procedures for s in sites)
    ids = [e["event_id"] for e in cohort.events]
    assert len(ids) == len(set(ids))
    assert len(cohort.deliveries) == len(cohort.events) + cohort.duplicates + len(cohort.malformed)
    assert cohort.duplicates == round(0.01 * (len(cohort.events) - 2)) > 0


def test_redeliveries_are_exact_copies_sent_later(cohort: SyntheticCohort) -> None:
    payloads = {encode(e) for e in cohort.events}
    sent = Counter(valid_deliveries(cohort))
    assert set(sent) == payloads
    assert sum(n - 1 for n in sent.values()) == cohort.duplicates


def test_deliveries_are_out_of_order_and_a_followup_arrives_last(cohort: SyntheticCohort) -> None:
    events = [json.loads(raw) for raw in valid_deliveries(cohort)]
    first_seen: dict[str, int] = {}
    for position, event in enumerate(events):
        first_seen.setdefault(event["event_id"], position)
    procedure_at = {
        e["procedure_id"]: first_seen[e["event_id"]]
        for e in by_type(cohort.events, "procedure.performed")
    }
    early = [
        e
        for e in by_type(cohort.events, "followup.recorded")
        if first_seen[e["event_id"]] < procedure_at[e["procedure_id"]]
    ]
    assert len(early) == 1
    last = json.loads(cohort.deliveries[-1])
    assert last["event_type"] == "followup.recorded"
    # It is late: events that happened after it were all sent before it.
    assert max(e["occurred_at"] for e in events[:-2]) > last["occurred_at"]


def test_retractions_arrive_after_their_targets(cohort: SyntheticCohort) -> None:
    retractions = by_type(cohort.events, "event.retracted")
    assert len(retractions) == 3
    by_id = {e["event_id"]: e for e in cohort.events}
    order = [json.loads(raw)["event_id"] for raw in valid_deliveries(cohort)]
    for retraction in retractions:
        target = by_id[retraction["target_event_id"]]
        assert target["event_type"] in {"followup.recorded", "complication.reported"}
        assert retraction["reason"] == "entered_in_error"
        assert retraction["procedure_id"] == target["procedure_id"]
        assert order.index(retraction["event_id"]) > order.index(target["event_id"])


def test_clinical_timeline_is_consistent(cohort: SyntheticCohort) -> None:
    times = [e["occurred_at"] for e in cohort.events]
    assert times == sorted(times)
    for event in cohort.events:
        occurred = datetime.fromisoformat(event["occurred_at"])
        assert occurred.utcoffset() is not None
        assert datetime.fromisoformat(event["recorded_at"]) >= occurred
    deaths = {
        e["procedure_id"]: e["occurred_at"] for e in cohort.events if e.get("category") == "death"
    }
    assert deaths, "a 400-procedure default cohort includes metastasis deaths"
    for followup in by_type(cohort.events, "followup.recorded"):
        assert followup["occurred_at"] < deaths.get(followup["procedure_id"], "9999")
    indications = {
        e["procedure_id"]: e["indication"] for e in by_type(cohort.events, "procedure.performed")
    }
    assert {indications[p] for p in deaths} == {"metastasis"}


def test_cohort_has_the_expected_clinical_variety(cohort: SyntheticCohort) -> None:
    procedures = by_type(cohort.events, "procedure.performed")
    levels = [lv for p in procedures for lv in p["levels"] if "leakage_imaging" in lv]
    assert {lv["leakage_imaging"] for lv in levels} >= {"ct", "fluoroscopy", "not_assessed"}
    assert all(not lv["leakages"] for lv in levels if lv["leakage_imaging"] == "not_assessed")
    # Leak sites follow seed 000's counts (2 paravertebral : 1 foraminal):
    # the paravertebral count lies in the 99.9% binomial interval of 2/3.
    sites = Counter(leak["site"] for lv in levels for leak in lv["leakages"])
    leaks = sum(sites.values())
    share = catalog_value("leakage_site.paravertebral") / (
        catalog_value("leakage_site.paravertebral") + catalog_value("leakage_site.foraminal")
    )
    low, high = stats.binom.interval(0.999, leaks, share)
    assert low <= sites["paravertebral"] <= high, (sites, share)
    tumour = [p for p in procedures if Indication(p["indication"]).is_suspected_tumour]
    assert any(not p["biopsy_taken"] for p in tumour)
    assert sum(p["biopsy_taken"] for p in tumour) > 0.8 * len(tumour)
    timepoints = Counter(e["timepoint"] for e in by_type(cohort.events, "followup.recorded"))
    assert set(timepoints) == {"post_procedure", "week_1", "final"}
    assert max(timepoints.values()) < len(procedures)  # some visits are missed


def test_no_identifying_fields(cohort: SyntheticCohort) -> None:
    names = {k.lower() for e in cohort.events for k in keys(e)}
    names |= {
        k.lower() for raw in cohort.malformed if raw.endswith(b"}") for k in keys(json.loads(raw))
    }
    assert not {k for k in names if any(w in k for w in ("name", "mrn", "birth", "dob"))}


def test_observed_leakage_matches_the_catalog(drifting: list[Event]) -> None:
    expected = catalog_value("leakage_per_level.pvp.hemangioma")  # 3/28
    leaks, levels = assessed_levels(drifting[:DRIFT_AFTER])
    se = math.sqrt(expected * (1 - expected) / levels)
    assert abs(leaks / levels - expected) < 4 * se


def test_odds_ratio_raises_leakage_odds_after_drift(drifting: list[Event]) -> None:
    before = assessed_levels(drifting[:DRIFT_AFTER])
    after = assessed_levels(drifting[DRIFT_AFTER:])
    cells = [before[0], before[1] - before[0], after[0], after[1] - after[0]]
    log_or = math.log((cells[2] / cells[3]) / (cells[0] / cells[1]))
    se = math.sqrt(sum(1 / c for c in cells))
    assert abs(log_or - math.log(2.0)) < 4 * se


def test_odds_ratio_changes_only_which_levels_leak() -> None:
    def cohort(odds_ratio: float) -> tuple[Event, ...]:
        site = SiteProfile("crn", 300, HEMANGIOMA_PVP, leakage_odds_ratio=odds_ratio)
        return generate_cohort(5, [site]).events

    plain, worse = cohort(1.0), cohort(4.0)
    assert len(plain) == len(worse)
    for a, b in zip(plain, worse, strict=True):
        if a["event_type"] != "procedure.performed":
            assert a == b
            continue
        for la, lb in zip(a["levels"], b["levels"], strict=True):
            assert len(la["leakages"]) <= len(lb["leakages"])
    leaks = [assessed_levels(by_type(c, "procedure.performed"))[0] for c in (plain, worse)]
    assert leaks[1] > leaks[0]


def test_calibration_points_at_catalog_entries() -> None:
    ids = {e.id for e in load_catalog().baselines}
    assert set(CALIBRATION.values()) <= ids


@pytest.mark.parametrize("total", [0, 1, 7, 1000])
def test_default_sites_share_out_the_total(total: int) -> None:
    sites = default_sites(total)
    assert len(sites) >= 4
    assert sum(s.procedures for s in sites) == total
    assert len({s.site_id for s in sites}) == len(sites)


def test_site_profiles_are_validated() -> None:
    with pytest.raises(ValueError, match="slug"):
        SiteProfile("Not A Slug", 1, HEMANGIOMA_PVP)
    with pytest.raises(ValueError, match="case_mix"):
        SiteProfile("ok-site", 1, {})
    with pytest.raises(ValueError, match="unique"):
        generate_cohort(1, [SiteProfile("twin", 1, HEMANGIOMA_PVP)] * 2)


def test_any_complication_rate_matches_the_cohort_baseline() -> None:
    # Patients with a related complication, a symptomatic leak included, at
    # the figure the report and the drift charts compare with (s001: 2.5% for
    # PVP in hemangioma; s003: 10% in metastases).
    for indication, parameter in (
        (Indication.HEMANGIOMA, "complication_any.hemangioma"),
        (Indication.METASTASIS, "complication_any.metastasis"),
    ):
        site = SiteProfile(
            f"site-{indication.value[:4]}",
            procedures=4000,
            case_mix={(ProcedureType.PVP, indication): 1.0},
        )
        events = generate_cohort(3, [site], malformed=0, retractions=0).events
        related = {
            e["procedure_id"]
            for e in by_type(events, "complication.reported")
            if Relatedness(e["relatedness"]).counts_as_procedure_related
        } | {
            e["procedure_id"]
            for e in by_type(events, "procedure.performed")
            if any(leak["symptomatic"] for level in e["levels"] for leak in level["leakages"])
        }
        statistic = {e.id: e for e in load_catalog().baselines}[CALIBRATION[parameter]].statistic
        assert isinstance(statistic, Share)
        rate = statistic.value
        low, high = stats.binom.interval(0.999, 4000, rate)
        assert low <= len(related) <= high, (indication, len(related), rate)
