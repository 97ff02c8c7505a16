"""Leakage counted like with like: per-modality tallies, and a comparator that states its imaging."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from spinewatch.baselines import load_catalog
from spinewatch.baselines.model import BaselineCatalog, BaselineEntry
from spinewatch.contracts import (
    Anesthesia,
    Approach,
    CementLeakage,
    Indication,
    LeakageImaging,
    LeakageSite,
    ProcedurePerformed,
    ProcedureType,
    TreatedLevel,
    Vertebra,
)
from spinewatch.domain.drift.design import design_charts
from spinewatch.domain.drift.site_charts import outcome_reader
from spinewatch.domain.outcomes.facts import ProcedureFact, fact_of
from spinewatch.domain.outcomes.report import cohort_report
from spinewatch.domain.outcomes.report_metrics import NOT_LIKE_WITH_LIKE

PVP, HEMANGIOMA = ProcedureType.PVP, Indication.HEMANGIOMA
STRATUM = ("pvp", "hemangioma")
CT, FLUOROSCOPY = LeakageImaging.CT, LeakageImaging.FLUOROSCOPY
LEVELS = (Vertebra.L1, Vertebra.L2, Vertebra.L3, Vertebra.L4, Vertebra.L5)


def _procedure(levels: list[tuple[LeakageImaging, bool]]) -> ProcedurePerformed:
    when = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    return ProcedurePerformed(
        schema_version=1,
        source="ris-test",
        site_id="site-a",
        patient_ref=uuid.UUID(int=1),
        procedure_id=uuid.UUID(int=2),
        event_id=uuid.UUID(int=3),
        event_type="procedure.performed",
        occurred_at=when,
        recorded_at=when,
        procedure_type=PVP,
        indication=HEMANGIOMA,
        levels=tuple(
            TreatedLevel(
                vertebra=vertebra,
                approach=Approach.UNIPEDICULAR,
                cement_volume_ml=4.0,
                leakage_imaging=imaging,
                leakages=(
                    (CementLeakage(site=LeakageSite.PARAVERTEBRAL, symptomatic=False),)
                    if leaked
                    else ()
                ),
            )
            for vertebra, (imaging, leaked) in zip(LEVELS, levels, strict=False)
        ),
        anesthesia=Anesthesia.LOCAL,
        pre_vas=7.0,
        neurological_deficit_at_presentation=False,
        biopsy_taken=True,
    )


def _ct_catalog() -> BaselineCatalog:
    """The bundled catalog, with seed 000's per-level leakage claiming CT detection."""
    catalog = load_catalog()

    def stated(entry: BaselineEntry) -> BaselineEntry:
        if entry.id != "s000.leakage.per_level":
            return entry
        return entry.model_copy(
            update={"detection": "ct", "detection_quote": "synthetic: counted on CT"}
        )

    return catalog.model_copy(update={"baselines": tuple(map(stated, catalog.baselines))})


def test_levels_are_tallied_per_modality() -> None:
    fact = fact_of(
        _procedure(
            [(CT, True), (CT, False), (FLUOROSCOPY, True), (LeakageImaging.NOT_ASSESSED, False)]
        )
    )
    assert isinstance(fact, ProcedureFact)
    tally = dict(fact.intrinsic)
    assert tally["levels_assessed_for_leakage"] == 3
    assert tally["levels_with_leakage"] == 2
    assert (tally["levels_assessed_for_leakage.ct"], tally["levels_with_leakage_on.ct"]) == (2, 1)
    assert (
        tally["levels_assessed_for_leakage.fluoroscopy"],
        tally["levels_with_leakage_on.fluoroscopy"],
    ) == (1, 1)
    assert "levels_assessed_for_leakage.radiograph" not in tally


# A cohort: 10 levels on CT with 5 leaks, 20 on fluoroscopy with 1.
COHORT = {
    "patients": 25,
    "levels_assessed_for_leakage": 30,
    "levels_with_leakage": 6,
    "levels_assessed_for_leakage.ct": 10,
    "levels_with_leakage_on.ct": 5,
    "levels_assessed_for_leakage.fluoroscopy": 20,
    "levels_with_leakage_on.fluoroscopy": 1,
}


def _rows(catalog: BaselineCatalog) -> dict[str, tuple[int | None, int, str | None]]:
    return {
        row.metric: (row.numerator, row.denominator, row.comparator_note)
        for row in cohort_report(COHORT, PVP, HEMANGIOMA, catalog)
        if row.metric.startswith("cement_leakage_rate_per_level")
    }


def test_report_shows_each_modality_side_by_side() -> None:
    rows = _rows(load_catalog())
    assert rows["cement_leakage_rate_per_level_ct"][:2] == (5, 10)
    assert rows["cement_leakage_rate_per_level_fluoroscopy"][:2] == (1, 20)
    assert rows["cement_leakage_rate_per_level_radiograph"][:2] == (0, 0)


def test_a_comparator_without_a_stated_method_counts_every_level_and_says_so() -> None:
    numerator, denominator, note = _rows(load_catalog())["cement_leakage_rate_per_level"]
    assert (numerator, denominator) == (6, 30)
    assert note is not None
    assert NOT_LIKE_WITH_LIKE in note
    (chart,) = design_charts(load_catalog(), ("cement_leakage_rate_per_level",), (2.0,), 500)
    assert chart.strata[STRATUM].tallies is None
    assert outcome_reader([chart])(COHORT, STRATUM) == ((6, 30),)


def test_a_ct_comparator_counts_only_ct_assessed_levels() -> None:
    catalog = _ct_catalog()
    numerator, denominator, note = _rows(catalog)["cement_leakage_rate_per_level"]
    assert (numerator, denominator) == (5, 10)
    assert note is not None
    assert "like with like: only levels assessed on ct counted" in note
    (chart,) = design_charts(catalog, ("cement_leakage_rate_per_level",), (2.0,), 500)
    assert chart.strata[STRATUM].tallies == (
        "levels_with_leakage_on.ct",
        "levels_assessed_for_leakage.ct",
    )
    read = outcome_reader([chart])
    assert read(COHORT, STRATUM) == ((5, 10),)
    # A case with no CT-assessed level is no trial on this chart.
    assert read({"levels_assessed_for_leakage": 2, "levels_with_leakage": 1}, STRATUM) == (None,)


def test_a_stated_method_needs_its_quote() -> None:
    entry = load_catalog().entry("s000.leakage.per_level")
    assert entry is not None
    assert entry.detection == "not_stated"
    data = entry.model_dump(exclude_none=True) | {"detection": "ct"}
    with pytest.raises(ValueError, match="detection_quote"):
        BaselineEntry.model_validate(data)
