"""Outcomes of the other treatments of hemangioma (seeds 001/002/004).

Follow-up schema version 2 adds a neurological status and a pain-relief
category (contract tests: tests/test_followup_v2.py); the engine reports,
per embolization, decompression and radiotherapy cohort, the shares of each
next to the catalog's figures. The tally tests fix what "the patient's
outcome" means (latest assessment; neurological improvement among patients
who presented with a deficit); the end-to-end test runs seeded cohorts
through a real worker and reads /metrics against an independent count.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spinewatch.baselines import load_catalog
from spinewatch.baselines.model import Proportion, Share
from spinewatch.contracts import (
    Indication,
    NeurologicalStatus,
    PainRelief,
    ProcedureType,
    parse_event,
)
from spinewatch.domain.outcomes.contribution import (
    NEURO_IMPROVED,
    NEURO_RECOVERED,
    NEURO_STATUS_REPORTED,
    PAIN_AND_NEURO_REPORTED,
    PAIN_RELIEF_AND_NEURO_IMPROVED,
    PAIN_RELIEF_REPORTED,
    contribution_of,
    followup_delta,
    pain_relief_tally,
)
from spinewatch.domain.outcomes.records import ProcedureRecord, apply_event
from spinewatch.domain.outcomes.report import cohort_report
from tests.conftest import SettingsFactory
from tests.support import produce, running_worker, scrape_async, value, wait_until

Event = dict[str, Any]

# --- tallies: which assessment counts, and for whom --------------------------------------


def _ids(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


_START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


class _Patient:
    """Events of one patient's procedure, built like a hospital system would send them."""

    def __init__(
        self,
        rng: random.Random,
        site: str,
        procedure: ProcedureType,
        *,
        deficit: bool,
        day: int = 0,
    ) -> None:
        self.rng = rng
        self.when = _START + timedelta(days=day)
        self.common = {
            "source": "ris-test.v1",
            "site_id": site,
            "patient_ref": _ids(rng),
            "procedure_id": _ids(rng),
        }
        self.procedure: Event = {
            "event_id": _ids(rng),
            "event_type": "procedure.performed",
            "schema_version": 1,
            **self._at(0),
            **self.common,
            "procedure_type": procedure.value,
            "indication": Indication.HEMANGIOMA.value,
            "levels": [{"vertebra": "T9"}],
            "anesthesia": "general",
            "pre_vas": 7.5,
            "neurological_deficit_at_presentation": deficit,
            "biopsy_taken": False,
        }

    def _at(self, days: int) -> Event:
        moment = self.when + timedelta(days=days)
        return {
            "occurred_at": moment.isoformat(),
            "recorded_at": (moment + timedelta(minutes=20)).isoformat(),
        }

    def followup(
        self,
        days: int,
        neuro: NeurologicalStatus | None,
        pain: PainRelief | None,
        timepoint: str = "other",
    ) -> Event:
        event: Event = {
            "event_id": _ids(self.rng),
            "event_type": "followup.recorded",
            "schema_version": 2,
            **self._at(days),
            **self.common,
            "timepoint": timepoint,
            "days_since_procedure": days,
            "vas": 3.0,
        }
        if neuro is not None:
            event["neurological_status"] = neuro.value
        if pain is not None:
            event["pain_relief"] = pain.value
        return event

    def retraction(self, target: Event) -> Event:
        return {
            "event_id": _ids(self.rng),
            "event_type": "event.retracted",
            "schema_version": 1,
            **self._at(400),
            **self.common,
            "target_event_id": target["event_id"],
            "reason": "entered_in_error",
        }


def _tally(events: list[Event]) -> dict[str, int]:
    record = ProcedureRecord()
    for event in events:
        record = apply_event(record, parse_event(json.dumps(event)))
    contribution = contribution_of(record)
    assert contribution is not None
    return contribution.tally


def _outcome_tallies(tally: dict[str, int]) -> dict[str, int]:
    names = {
        PAIN_RELIEF_REPORTED,
        NEURO_STATUS_REPORTED,
        NEURO_IMPROVED,
        NEURO_RECOVERED,
        PAIN_AND_NEURO_REPORTED,
        PAIN_RELIEF_AND_NEURO_IMPROVED,
        *(pain_relief_tally(c) for c in PainRelief),
    }
    return {name: count for name, count in tally.items() if name in names}


def test_the_latest_assessment_of_each_measure_counts() -> None:
    patient = _Patient(
        random.Random(1), "unit-site", ProcedureType.DECOMPRESSION_LAMINECTOMY, deficit=True
    )
    early = patient.followup(91, NeurologicalStatus.IMPROVED, PainRelief.PARTIAL, "month_3")
    late = patient.followup(400, NeurologicalStatus.RECOVERED, PainRelief.NONE, "final")
    # Received out of order: the later visit still wins.
    assert _outcome_tallies(_tally([patient.procedure, late, early])) == {
        PAIN_RELIEF_REPORTED: 1,
        pain_relief_tally(PainRelief.NONE): 1,
        NEURO_STATUS_REPORTED: 1,
        NEURO_IMPROVED: 1,
        NEURO_RECOVERED: 1,
        PAIN_AND_NEURO_REPORTED: 1,
        PAIN_RELIEF_AND_NEURO_IMPROVED: 0,  # improved, but no pain relief
    }
    # Retracting the later visit brings the earlier one back.
    assert _outcome_tallies(_tally([patient.procedure, early, late, patient.retraction(late)])) == {
        PAIN_RELIEF_REPORTED: 1,
        pain_relief_tally(PainRelief.PARTIAL): 1,
        NEURO_STATUS_REPORTED: 1,
        NEURO_IMPROVED: 1,
        NEURO_RECOVERED: 0,
        PAIN_AND_NEURO_REPORTED: 1,
        PAIN_RELIEF_AND_NEURO_IMPROVED: 1,
    }


def test_each_measure_comes_from_its_own_latest_visit() -> None:
    patient = _Patient(
        random.Random(2), "unit-site", ProcedureType.DECOMPRESSION_LAMINECTOMY, deficit=True
    )
    neuro = patient.followup(91, NeurologicalStatus.WORSE, None, "month_3")
    pain = patient.followup(182, None, PainRelief.COMPLETE, "month_6")
    assert _outcome_tallies(_tally([patient.procedure, neuro, pain])) == {
        PAIN_RELIEF_REPORTED: 1,
        pain_relief_tally(PainRelief.COMPLETE): 1,
        NEURO_STATUS_REPORTED: 1,
        NEURO_IMPROVED: 0,
        NEURO_RECOVERED: 0,
        PAIN_AND_NEURO_REPORTED: 1,
        PAIN_RELIEF_AND_NEURO_IMPROVED: 0,
    }


def test_neurological_improvement_counts_only_patients_who_presented_with_a_deficit() -> None:
    patient = _Patient(random.Random(3), "unit-site", ProcedureType.RADIOTHERAPY, deficit=False)
    visit = patient.followup(182, NeurologicalStatus.UNCHANGED, PainRelief.COMPLETE)
    assert _outcome_tallies(_tally([patient.procedure, visit])) == {
        PAIN_RELIEF_REPORTED: 1,
        pain_relief_tally(PainRelief.COMPLETE): 1,
    }


def test_a_version_2_follow_up_is_recomputed_not_added_as_a_delta() -> None:
    patient = _Patient(
        random.Random(4), "unit-site", ProcedureType.DECOMPRESSION_LAMINECTOMY, deficit=True
    )
    record = ProcedureRecord()
    record = apply_event(record, parse_event(json.dumps(patient.procedure)))
    v1 = patient.followup(30, None, None, "month_1") | {"schema_version": 1}
    record = apply_event(record, parse_event(json.dumps(v1)))
    assert followup_delta(record) is not None  # the fast path stays for version 1 visits
    v2 = patient.followup(91, NeurologicalStatus.IMPROVED, None, "month_3")
    record = apply_event(record, parse_event(json.dumps(v2)))
    assert followup_delta(record) is None


def test_vertebral_augmentation_keeps_neither_the_tallies_nor_their_cost() -> None:
    patient = _Patient(random.Random(5), "unit-site", ProcedureType.PVP, deficit=False)
    patient.procedure["levels"] = [
        {"vertebra": "L2", "approach": "bipedicular", "cement_volume_ml": 4.0}
        | {"leakage_imaging": "ct"}
    ]
    visit = patient.followup(91, NeurologicalStatus.UNCHANGED, PainRelief.COMPLETE, "month_3")
    events = [patient.procedure, visit]
    assert _outcome_tallies(_tally(events)) == {}
    record = ProcedureRecord()
    for event in events:
        record = apply_event(record, parse_event(json.dumps(event)))
    assert followup_delta(record) is not None  # the fast path, as for any PVP visit


def test_the_rows_appear_only_for_the_three_treatments() -> None:
    catalog = load_catalog()
    for procedure in ProcedureType:
        rows = cohort_report({}, procedure, Indication.HEMANGIOMA, catalog)
        names = [r.metric for r in rows]
        if procedure in _SEED_FIGURES_BY_PROCEDURE:
            assert [n for n in names if n in ROWS] == list(ROWS), procedure
        else:
            assert not set(ROWS) & set(names), procedure


# --- end to end: seeded cohorts through a real worker ---------------------------------------

SITE = "outcomes-site"

# The seeds' figures each row is set against, with the catalog entries that
# print them (the catalog is read below to check they say the same).
SEED_FIGURES: dict[tuple[ProcedureType, str], tuple[float, frozenset[str]]] = {
    (ProcedureType.TRANSARTERIAL_EMBOLIZATION, "pain_relief_complete_rate"): (
        3 / 4,
        frozenset(
            {"s002.embolization.complete_resolution", "s004.embolization.complete_resolution"}
        ),
    ),
    (ProcedureType.DECOMPRESSION_LAMINECTOMY, "neurological_improvement_rate"): (
        0.70,
        frozenset({"s002.decompression.neuro_70pct", "s002.decompression.neuro_7_of_10"}),
    ),
    (ProcedureType.DECOMPRESSION_LAMINECTOMY, "pain_relief_and_neurological_improvement_rate"): (
        7 / 9,
        frozenset({"s002.decompression.pain_and_neuro", "s004.decompression.pain_and_neuro"}),
    ),
    (ProcedureType.DECOMPRESSION_LAMINECTOMY, "neurological_full_recovery_rate"): (
        1.0,
        frozenset({"s004.surgery.full_neuro_recovery"}),
    ),
    (ProcedureType.RADIOTHERAPY, "pain_relief_complete_rate"): (
        0.57,
        frozenset({"s001.radiotherapy.complete_remission"}),
    ),
    (ProcedureType.RADIOTHERAPY, "pain_relief_partial_rate"): (
        0.32,
        frozenset({"s001.radiotherapy.partial_remission"}),
    ),
    (ProcedureType.RADIOTHERAPY, "pain_relief_none_rate"): (
        0.11,
        frozenset({"s001.radiotherapy.no_response"}),
    ),
}
_SEED_FIGURES_BY_PROCEDURE = {procedure for procedure, _ in SEED_FIGURES}
ROWS = (
    "pain_relief_complete_rate",
    "pain_relief_partial_rate",
    "pain_relief_none_rate",
    "neurological_improvement_rate",
    "neurological_full_recovery_rate",
    "pain_relief_and_neurological_improvement_rate",
)


def _seeded_events(seed: int) -> list[Event]:
    """Three cohorts at one site, with visits in random order and a few retractions."""
    rng = random.Random(seed)
    events: list[Event] = []
    sizes = {
        ProcedureType.TRANSARTERIAL_EMBOLIZATION: 12,
        ProcedureType.DECOMPRESSION_LAMINECTOMY: 20,
        ProcedureType.RADIOTHERAPY: 15,
    }
    for procedure, size in sizes.items():
        for i in range(size):
            patient = _Patient(rng, SITE, procedure, deficit=rng.random() < 0.6, day=i)
            events.append(patient.procedure)
            visits = []
            for days, timepoint in ((91, "month_3"), (365, "month_12")):
                if rng.random() < 0.8:
                    neuro = rng.choice([None, *NeurologicalStatus])
                    pain = rng.choice([None, *PainRelief])
                    if neuro is None and pain is None:
                        pain = PainRelief.PARTIAL
                    visits.append(patient.followup(days, neuro, pain, timepoint))
            if rng.random() < 0.2:  # a version 1 visit: VAS only, still read
                visit = patient.followup(30, None, None, "month_1") | {"schema_version": 1}
                visits.append(visit)
            events += visits
            if visits and rng.random() < 0.15:
                events.append(patient.retraction(rng.choice(visits)))
    return events


def _independent_shares(events: list[Event]) -> dict[tuple[str, str], tuple[int, int]]:
    """(procedure, row) -> (numerator, denominator), counted straight from the events."""
    retracted = {e["target_event_id"] for e in events if e["event_type"] == "event.retracted"}
    procedures = {e["procedure_id"]: e for e in events if e["event_type"] == "procedure.performed"}
    visits: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event["event_type"] == "followup.recorded" and event["event_id"] not in retracted:
            visits[event["procedure_id"]].append(event)
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for procedure_id, procedure in procedures.items():
        kind = procedure["procedure_type"]
        for row in ROWS:
            counts[(kind, row)]  # every row exists, even at 0 of 0

        def latest(field: str, pid: str = procedure_id) -> str | None:
            with_field = [v for v in visits[pid] if v.get(field)]
            return (
                max(with_field, key=lambda v: v["days_since_procedure"])[field]
                if with_field
                else None
            )

        pain, neuro = latest("pain_relief"), latest("neurological_status")
        if pain is not None:
            for category in PainRelief:
                tally = counts[(kind, f"pain_relief_{category.value}_rate")]
                tally[0] += pain == category.value
                tally[1] += 1
        if neuro is None or not procedure["neurological_deficit_at_presentation"]:
            continue
        improved = neuro in ("improved", "recovered")
        for row, hit in (
            ("neurological_improvement_rate", improved),
            ("neurological_full_recovery_rate", neuro == "recovered"),
        ):
            counts[(kind, row)][0] += hit
            counts[(kind, row)][1] += 1
        if pain is not None:
            both = counts[(kind, "pain_relief_and_neurological_improvement_rate")]
            both[0] += improved and pain != "none"
            both[1] += 1
    return {key: (n, d) for key, (n, d) in counts.items()}


def _catalog_figure(entry_id: str) -> float:
    entry = next(e for e in load_catalog().baselines if e.id == entry_id)
    statistic = entry.statistic
    if isinstance(statistic, Proportion):
        return statistic.numerator / statistic.denominator
    assert isinstance(statistic, Share)
    return statistic.value


def test_the_seed_figures_are_the_catalog_figures() -> None:
    for figure, entry_ids in SEED_FIGURES.values():
        for entry_id in entry_ids:
            assert _catalog_figure(entry_id) == pytest.approx(figure), entry_id


def _labels(procedure: str, row: str) -> dict[str, str]:
    return {
        "site": SITE,
        "procedure": procedure,
        "indication": "hemangioma",
        "operator": "all",
        "metric": row,
        "timepoint": "",
    }


@pytest.mark.e2e
async def test_seeded_cohorts_show_their_shares_next_to_the_seed_baselines(
    make_settings: SettingsFactory, kafka_bootstrap: str
) -> None:
    events = _seeded_events(18)
    expected = _independent_shares(events)
    # The seeding reaches every row with a baseline, with something to divide.
    for procedure, row in SEED_FIGURES:
        assert expected[(procedure.value, row)][1] >= 3, (procedure, row)
    assert any(e["schema_version"] == 1 and e["event_type"] == "followup.recorded" for e in events)
    assert any(e["event_type"] == "event.retracted" for e in events)
    shuffled = copy.copy(events)
    random.Random(5).shuffle(shuffled)  # visits and retractions before their procedures too

    settings = make_settings()
    async with running_worker(settings, kafka_bootstrap) as worker:
        await produce(
            kafka_bootstrap, settings.events_topic, [json.dumps(e).encode() for e in shuffled]
        )

        def observed(samples: dict[Any, float]) -> dict[tuple[str, str], tuple[int, int]]:
            return {
                key: (
                    int(value(samples, "spinewatch_outcome_numerator", **_labels(*key))),
                    int(value(samples, "spinewatch_outcome_denominator", **_labels(*key))),
                )
                for key in expected
            }

        async def probe() -> dict[Any, float]:
            return await scrape_async(f"{worker.metrics.url}/metrics")

        samples = await wait_until(
            probe, lambda s: observed(s) == expected, 60.0, "treatment outcome counts"
        )
    assert observed(samples) == expected
    for (kind, row), (numerator, denominator) in expected.items():
        rate = value(samples, "spinewatch_outcome_rate_ratio", **_labels(kind, row))
        if denominator:
            assert rate == pytest.approx(numerator / denominator), (kind, row)
    # Each row with a seed figure shows it, from a catalog entry that prints it.
    baselines = {
        (dict(labels)["procedure"], dict(labels)["metric"]): (dict(labels), sample)
        for (name, labels), sample in samples.items()
        if name == "spinewatch_baseline_value" and dict(labels)["timepoint"] == ""
    }
    for (procedure, row), (figure, entry_ids) in SEED_FIGURES.items():
        labels, shown = baselines[(procedure.value, row)]
        assert labels["baseline_id"] in entry_ids, (procedure, row)
        assert shown == pytest.approx(figure) == _catalog_figure(labels["baseline_id"])
        assert labels["exact_cohort"] == "true"
    # Rows the seeds give no figure for show none (e.g. decompression pain relief alone).
    for procedure in _SEED_FIGURES_BY_PROCEDURE:
        for row in ROWS:
            if (procedure, row) not in SEED_FIGURES:
                assert (procedure.value, row) not in baselines, (procedure, row)
