"""Drift charts folded from procedure records: exact under any delivery order."""

from __future__ import annotations

import random

import pytest

from spinewatch.contracts import Indication, ProcedureType, parse_event
from spinewatch.demo.synthetic.cohort import SiteProfile, encode, generate_cohort
from spinewatch.domain.drift.arl import calibrate
from spinewatch.domain.drift.charts import (
    Stratum,
    cases_of,
    complication_spec,
    fold_chart,
    leakage_spec,
)
from spinewatch.domain.outcomes.facts import fact_of
from spinewatch.domain.outcomes.partition import FactItem, PartitionState, apply_facts, rebuilt

PVP_HEMANGIOMA = {(ProcedureType.PVP, Indication.HEMANGIOMA): 1.0}
LEAKAGE_P0 = 3 / 28  # seed 000, s000.leakage.per_level
RISK: dict[Stratum, float] = {("pvp", "hemangioma"): LEAKAGE_P0}


def _items(site: SiteProfile, seed: int) -> list[FactItem]:
    cohort = generate_cohort(seed, [site], duplicate_share=0, malformed=0, retractions=0)
    events = [parse_event(encode(e)) for e in cohort.events]
    return [(e.procedure_id.bytes, fact_of(e)) for e in events]


def _leakage_design() -> float:
    # ARL0 20,000 levels: by the Markov chain, a stable 600-procedure site
    # (~650 levels) alarms with probability 0.027, and doubled odds are
    # caught within 400 levels with probability 0.974. The alarm rates
    # themselves are tested in test_drift_stats; here one seeded site each.
    return calibrate([(LEAKAGE_P0, 1.0)], 2.0, 20_000.0).limit


def test_the_chart_is_the_same_whatever_the_order_and_batching() -> None:
    site = SiteProfile("order", 300, PVP_HEMANGIOMA, leakage_odds_ratio=2.0, drift_after=150)
    items = _items(site, seed=4)
    spec = leakage_spec(2.0, _leakage_design())
    in_order = PartitionState()
    apply_facts(in_order, items)
    reference = fold_chart(spec, cases_of(in_order.records), RISK)
    assert reference.cases > 250
    rng = random.Random(9)
    for _ in range(3):
        shuffled = items + rng.sample(items, 40)  # redeliveries too
        rng.shuffle(shuffled)
        state = PartitionState()
        for start in range(0, len(shuffled), 37):
            apply_facts(state, shuffled[start : start + 37])
        assert fold_chart(spec, cases_of(state.records), RISK) == reference
    # And after a restart, from the changelog segments.
    restored = rebuilt([items[200:], items[:200]])
    assert fold_chart(spec, cases_of(restored.records), RISK) == reference


def test_a_site_whose_leakage_odds_double_signals_after_the_change_and_a_stable_one_does_not() -> (
    None
):
    limit = _leakage_design()
    spec = leakage_spec(2.0, limit)
    drifting = SiteProfile("drift", 600, PVP_HEMANGIOMA, leakage_odds_ratio=2.0, drift_after=200)
    stable = SiteProfile("stable", 600, PVP_HEMANGIOMA)
    charts = {}
    for site in (drifting, stable):
        state = PartitionState()
        apply_facts(state, _items(site, seed=12))
        charts[site.site_id] = fold_chart(spec, cases_of(state.records), RISK)
    signals = charts["drift"].signals
    assert signals, "the doubled leakage odds were not signalled"
    assert all(s.case_index >= 150 for s in signals)  # not before the change (cases ~ procedures)
    assert signals[0].change_point >= 120
    assert not charts["stable"].signals


def test_a_complication_reported_later_changes_the_earlier_case() -> None:
    site = SiteProfile("late", 40, PVP_HEMANGIOMA)
    cohort = generate_cohort(5, [site], duplicate_share=0, malformed=0, retractions=0)
    events = [parse_event(encode(e)) for e in cohort.events]
    state = PartitionState()
    apply_facts(state, [(e.procedure_id.bytes, fact_of(e)) for e in events])
    # An early case with no complication yet: a late report must change it.
    cases = cases_of(state.records)
    quiet = next(c for c in cases[:20] if not c.tally.get("patients_with_complication"))
    first = next(
        e
        for e in events
        if e.event_type == "procedure.performed" and e.procedure_id.bytes == quiet.procedure_id
    )
    late = parse_event(
        encode(
            {
                **first.model_dump(mode="json", exclude={"procedure_type", "indication", "levels",
                    "anesthesia", "pre_vas", "pre_sf36", "neurological_deficit_at_presentation",
                    "posterior_wall_intact", "biopsy_taken", "histology", "operator_ref",
                    "duration_min", "blood_loss_ml"}),
                "event_type": "complication.reported",
                "event_id": "6f1d2a4e-5b0c-4e8a-9d3f-000000000001",
                "category": "radiculopathy",
                "severity": "moderate",
                "relatedness": "definite",
                "days_after_procedure": 30,
            }
        )
    )  # fmt: skip
    spec = complication_spec(2.0, 100.0)  # a limit never reached: compare statistics
    risk = {("pvp", "hemangioma"): 0.025}
    before = fold_chart(spec, cases_of(state.records), risk)
    apply_facts(state, [(late.procedure_id.bytes, fact_of(late))])
    after = fold_chart(spec, cases_of(state.records), risk)
    assert after.cases == before.cases  # the same cases: an earlier one changed
    assert before.vlad - after.vlad == pytest.approx(1.0)  # exactly one more adverse outcome
    assert after.statistic != before.statistic


def test_strata_without_a_baseline_are_not_charted() -> None:
    site = SiteProfile(
        "mixed", 200, {**PVP_HEMANGIOMA, (ProcedureType.PKP, Indication.OSTEOPOROTIC): 1.0}
    )
    state = PartitionState()
    apply_facts(state, _items(site, seed=3))
    cases = cases_of(state.records)
    charted = fold_chart(leakage_spec(2.0, 5.0), cases, RISK)
    with_levels = [
        c
        for c in cases
        if c.stratum == ("pvp", "hemangioma") and c.tally.get("levels_assessed_for_leakage")
    ]
    assert charted.cases == len(with_levels) < len(cases)
