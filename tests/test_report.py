"""Cohort report: rates and VAS means from tallies, each beside its literature figure."""

from __future__ import annotations

import math
import re
import statistics
from itertools import product
from pathlib import Path

import pytest

from spinewatch.baselines import BaselineCatalog, load_catalog
from spinewatch.baselines.model import BaselineEntry, Figure, Threshold
from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.domain.outcomes.contribution import RESPONDER_REDUCTION, VAS_SCALE, Tally
from spinewatch.domain.outcomes.report import (
    PRACTICE_RULES,
    RATE_METRICS,
    VAS_SERIES,
    BaselineMatch,
    ReportRow,
    baseline_for,
    cohort_report,
    literature_groups,
    sum_tallies,
)

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
PVP, PKP = ProcedureType.PVP, ProcedureType.PKP
HEMANGIOMA, METASTASIS, MYELOMA, OSTEOPOROTIC = (
    Indication.HEMANGIOMA,
    Indication.METASTASIS,
    Indication.MYELOMA_PLASMACYTOMA,
    Indication.OSTEOPOROTIC,
)
Z95 = 1.959963984540054

PRE_VAS = [8.0, 7.5, 6.0, 9.0]
POST_VAS = [2.0, 1.5, 1.0, 3.0]
VAS_CHANGE = [post - pre for pre, post in zip(PRE_VAS, POST_VAS, strict=True)]


@pytest.fixture(scope="module")
def catalog() -> BaselineCatalog:
    return load_catalog()


def _moments(series: str, values: list[float]) -> Tally:
    scaled = [round(v * VAS_SCALE) for v in values]
    return {
        f"{series}.n": len(scaled),
        f"{series}.sum": sum(scaled),
        f"{series}.sumsq": sum(s * s for s in scaled),
    }


def _hemangioma_series() -> Tally:
    """Seed 000's series in tally form: 26 patients, 28 levels, 3 leaked."""
    return {
        "patients": 26,
        "levels_treated": 28,
        "levels_assessed_for_leakage": 28,
        "levels_with_leakage": 3,
        "levels_with_leakage.paravertebral": 2,
        "levels_with_leakage.foraminal": 1,
        "patients_assessed_for_leakage": 26,
        "patients_with_leakage": 3,
        "patients_with_symptomatic_leakage": 1,
        "patients_with_complication": 2,
        "patients_with_complication.symptomatic_cement_leakage": 1,
        "patients_with_complication.radiculopathy": 1,
        "patients_with_complication.reoperation": 1,
        "pvp_alone_with_neurological_deficit": 1,
        "suspected_tumour_procedures": 26,
        "responder_eligible.post_procedure": 25,
        "responders.post_procedure": 20,
        "analgesic_reported.week_1": 20,
        "analgesic_same_or_more.week_1": 7,
        **_moments("pre_procedure", PRE_VAS),
        **_moments("vas.post_procedure", POST_VAS),
        **_moments("vas_change.post_procedure", VAS_CHANGE),
    }


def _wilson_by_quadratic(k: int, n: int) -> tuple[float, float]:
    """Wilson bounds as the roots of (p_hat - p)^2 = z^2 p (1 - p) / n."""
    p_hat, z2 = k / n, Z95 * Z95
    a, b, c = 1 + z2 / n, -(2 * p_hat + z2 / n), p_hat * p_hat
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


def _row(rows: list[ReportRow], metric: str, timepoint: str | None = "*") -> ReportRow:
    found = [r for r in rows if r.metric == metric and timepoint in ("*", r.timepoint)]
    assert len(found) == 1, (metric, timepoint, found)
    return found[0]


def _baseline(row: ReportRow) -> BaselineMatch:
    assert row.baseline is not None, row.metric
    return row.baseline


def _seed_text(seed: str) -> str:
    """Seed text with PDF line-break hyphenation joined and whitespace folded."""
    raw = (SEEDS / seed).read_text(encoding="utf-8")
    return " ".join(re.sub(r"(\w)-\s*\n\s*(\w)", r"\1\2", raw).split())


# --- rates and means from the tally ---------------------------------------------


def test_leakage_per_level_is_counted_with_its_wilson_interval(catalog: BaselineCatalog) -> None:
    row = _row(
        cohort_report(_hemangioma_series(), PVP, HEMANGIOMA, catalog),
        "cement_leakage_rate_per_level",
    )
    assert (row.kind, row.unit, row.numerator, row.denominator) == ("rate", "treated_level", 3, 28)
    assert row.value == pytest.approx(3 / 28)
    assert row.low == pytest.approx(0.0371, abs=1e-3)
    assert row.high == pytest.approx(0.2718, abs=1e-3)
    low, high = _wilson_by_quadratic(3, 28)
    assert row.low == pytest.approx(low, abs=1e-9)
    assert row.high == pytest.approx(high, abs=1e-9)
    assert row.sd is None
    assert not row.expected_zero


@pytest.mark.parametrize(
    ("metric", "timepoint", "numerator", "denominator"),
    [
        ("cement_leakage_rate_per_patient", "intra_procedure", 3, 26),
        ("cement_leakage_rate_per_level_paravertebral", "intra_procedure", 2, 28),
        ("cement_leakage_rate_per_level_foraminal", "intra_procedure", 1, 28),
        ("cement_leakage_rate_per_level_epidural", "intra_procedure", 0, 28),
        ("symptomatic_cement_leakage_rate", "intra_procedure", 1, 26),
        ("complication_rate", None, 2, 26),
        ("radiculopathy_rate", None, 1, 26),
        ("reoperation_rate", None, 1, 26),
        ("death_rate", None, 0, 26),
        ("responder_rate", "post_procedure", 20, 25),
        ("analgesic_same_or_more_rate", "week_1", 7, 20),
        ("pvp_alone_with_neurological_deficit_rate", None, 1, 26),
        ("suspected_tumour_without_biopsy_rate", None, 0, 26),
    ],
)
def test_each_rate_reads_its_own_tallies(
    catalog: BaselineCatalog, metric: str, timepoint: str | None, numerator: int, denominator: int
) -> None:
    row = _row(cohort_report(_hemangioma_series(), PVP, HEMANGIOMA, catalog), metric, timepoint)
    assert (row.numerator, row.denominator) == (numerator, denominator)
    assert row.value == pytest.approx(numerator / denominator)
    low, high = _wilson_by_quadratic(numerator, denominator)
    assert row.low == pytest.approx(max(low, 0.0), abs=1e-9)
    assert row.high == pytest.approx(high, abs=1e-9)


@pytest.mark.parametrize(
    ("metric", "timepoint", "values"),
    [
        ("vas_score", "pre_procedure", PRE_VAS),
        ("vas_score", "post_procedure", POST_VAS),
        ("vas_change", "post_procedure", VAS_CHANGE),
    ],
)
def test_vas_rows_give_mean_sd_and_n(
    catalog: BaselineCatalog, metric: str, timepoint: str, values: list[float]
) -> None:
    row = _row(cohort_report(_hemangioma_series(), PVP, HEMANGIOMA, catalog), metric, timepoint)
    assert (row.kind, row.numerator, row.denominator) == ("mean", None, len(values))
    assert row.value == pytest.approx(statistics.mean(values), abs=1e-9)
    assert row.sd == pytest.approx(statistics.stdev(values), abs=1e-9)
    assert (row.low, row.high) == (None, None)


# --- which literature figure each row is set against ----------------------------


LEAK_LEVEL = ("cement_leakage_rate_per_level", "intra_procedure")
LEAK_PATIENT = ("cement_leakage_rate_per_patient", "intra_procedure")


@pytest.mark.parametrize(
    ("cohort", "row_key", "entry_id", "exact"),
    [
        ((PVP, HEMANGIOMA), LEAK_LEVEL, "s000.leakage.per_level", True),
        (
            (PVP, HEMANGIOMA),
            ("symptomatic_cement_leakage_rate", "intra_procedure"),
            "s000.leakage.symptomatic",
            True,
        ),
        ((PVP, HEMANGIOMA), ("complication_rate", None), "s001.complication.pvp", True),
        (
            (PVP, HEMANGIOMA),
            ("pulmonary_cement_embolism_rate", None),
            "s000.pulmonary_embolism",
            True,
        ),
        ((PVP, HEMANGIOMA), ("new_vertebral_fracture_rate", None), "s000.new_fracture", True),
        (
            (PVP, HEMANGIOMA),
            ("analgesic_same_or_more_rate", "week_1"),
            "s001.cohen.analgesic",
            True,
        ),
        ((PVP, HEMANGIOMA), ("vas_score", "pre_procedure"), "s000.vas.pre", True),
        ((PVP, HEMANGIOMA), ("vas_score", "post_procedure"), "s000.vas.post", True),
        ((PVP, HEMANGIOMA), ("vas_score", "final"), "s000.vas.final", True),
        ((PVP, METASTASIS), ("complication_rate", None), "s003.pilitis.metastasis", True),
        ((PVP, METASTASIS), ("death_rate", None), "s003.table1.weill.death", True),
        ((PVP, METASTASIS), ("radiculopathy_rate", None), "s003.table1.weill.radiculopathy", True),
        # Myeloma has no series of its own: the pooled cancer series stand in,
        # before the mixed series (Gangi) do.
        ((PVP, MYELOMA), ("reoperation_rate", None), "s003.table1.cortet.reoperation", False),
        ((PVP, MYELOMA), ("radiculopathy_rate", None), "s003.table1.cortet.radiculopathy", False),
        ((PVP, MYELOMA), LEAK_PATIENT, "s003.leakage.vp_vs_kp.vp", False),
        # The policy table picks Gangi's 187 patients over Cohen's 148 (both mixed).
        (
            (PVP, OSTEOPOROTIC),
            ("radiculopathy_rate", None),
            "s003.table1.gangi.radiculopathy",
            False,
        ),
        ((PVP, METASTASIS), LEAK_PATIENT, "s003.leakage.vp_vs_kp.vp", False),
        (
            (PVP, METASTASIS),
            ("symptomatic_cement_leakage_rate", "intra_procedure"),
            "s003.table1.weill.symptomatic_leakage",
            True,
        ),
        ((PKP, METASTASIS), LEAK_PATIENT, "s003.leakage.vp_vs_kp.kp", False),
    ],
)
def test_row_is_paired_with_the_expected_catalog_entry(
    catalog: BaselineCatalog,
    cohort: tuple[ProcedureType, Indication],
    row_key: tuple[str, str | None],
    entry_id: str,
    exact: bool,
) -> None:
    row = _row(cohort_report({}, *cohort, catalog), *row_key)
    match = _baseline(row)
    assert (match.entry_id, match.exact_cohort) == (entry_id, exact)
    entry = next(e for e in catalog.baselines if e.id == entry_id)
    assert match.source == entry.source
    assert match.described == entry.statistic.describe()
    assert (match.literature_procedure, match.literature_indication) == (
        str(entry.procedure),
        str(entry.indication),
    )


def test_baseline_values_are_read_from_each_kind_of_statistic(catalog: BaselineCatalog) -> None:
    rows = cohort_report({}, PVP, HEMANGIOMA, catalog)
    leakage = _baseline(_row(rows, "cement_leakage_rate_per_level"))
    # Figures are copied from the catalog, not recomputed: exact equality holds.
    assert (leakage.value, leakage.low, leakage.high, leakage.sd) == (3 / 28, None, None, None)
    assert leakage.described == "3/28 (10.7%)"
    vas = _baseline(_row(rows, "vas_score", "pre_procedure"))
    assert (vas.value, vas.sd) == (7.4, 1.6)
    share = _baseline(_row(rows, "complication_rate"))
    assert (share.value, share.low, share.high) == (0.025, None, None)
    # "up to 65%" (seed 001) spans 0..65%, and is no point value: it is the
    # published range of the row, never its baseline.
    osteoporotic = cohort_report({}, PVP, OSTEOPOROTIC, catalog)
    leak = _row(osteoporotic, "cement_leakage_rate_per_level")
    assert leak.baseline is None
    bound = leak.published_range
    assert bound is not None
    assert (bound.entry_id, bound.value, bound.low, bound.high) == (
        "s001.leakage.pvp_up_to_65",
        None,
        0.0,
        0.65,
    )
    assert leak.comparator_note is not None
    assert "never charted as a point" in leak.comparator_note
    # A published range (seed 003: 1-3% in osteoporosis) has only its ends.
    osteo = _row(osteoporotic, "complication_rate")
    assert osteo.baseline is None
    assert osteo.published_range is not None
    assert (osteo.published_range.value, osteo.published_range.low) == (None, 0.01)
    assert osteo.published_range.high == 0.03


def test_unit_mismatch_never_pairs_a_row_with_a_figure(catalog: BaselineCatalog) -> None:
    by_id = {entry.id: entry for entry in catalog.baselines}
    matched = 0
    for procedure, indication in product(ProcedureType, Indication):
        for row in cohort_report({}, procedure, indication, catalog):
            if row.baseline is None or row.baseline.entry_id is None:
                continue
            matched += 1
            assert by_id[row.baseline.entry_id].unit.value == row.unit, row
    assert matched >= 20
    hemangioma = cohort_report({}, PVP, HEMANGIOMA, catalog)
    # Seed 000 prints paravertebral leakage per patient and overall leakage per
    # level: neither may stand against the other unit.
    assert _row(hemangioma, "cement_leakage_rate_per_level_paravertebral").baseline is None
    assert _row(hemangioma, "cement_leakage_rate_per_level_foraminal").baseline is None
    assert _row(hemangioma, "cement_leakage_rate_per_patient").baseline is None
    per_patient = baseline_for(
        catalog,
        "paravertebral_leakage_rate",
        PVP,
        HEMANGIOMA,
        unit="patient",
        timepoint="intra_procedure",
    )
    assert per_patient is not None
    assert per_patient.entry_id == "s000.leakage.paravertebral"


def test_timepoint_must_match(catalog: BaselineCatalog) -> None:
    rows = cohort_report({}, PVP, HEMANGIOMA, catalog)
    # The catalog has VAS before, after and at final follow-up only.
    assert _row(rows, "vas_score", "month_1").baseline is None
    assert _row(rows, "vas_score", "week_1").baseline is None
    assert all(r.baseline is None for r in rows if r.metric == "vas_change")
    assert (
        baseline_for(catalog, "vas_score", PVP, HEMANGIOMA, unit="patient", timepoint=None) is None
    )
    assert (
        baseline_for(
            catalog,
            "analgesic_same_or_more_rate",
            PVP,
            HEMANGIOMA,
            unit="patient",
            timepoint="final",
        )
        is None
    )


def test_no_figure_outside_the_procedure_or_its_pooled_groups(catalog: BaselineCatalog) -> None:
    # PKP in hemangioma has no leakage point estimate, and PVP's "up to 65%"
    # must not be borrowed for it: PKP's own "less than 10%" is its range.
    row = _row(cohort_report({}, PKP, HEMANGIOMA, catalog), "cement_leakage_rate_per_level")
    assert row.baseline is None
    assert row.published_range is not None
    assert row.published_range.entry_id == "s001.leakage.pkp_below_10"
    for indication in Indication:
        for row in cohort_report({}, PKP, indication, catalog):
            for match in (row.baseline, row.published_range):
                if match is not None and match.entry_id is not None:
                    assert match.literature_procedure in ("pkp", "vertebral_augmentation"), row


def test_literature_groups_widen_indication_before_procedure() -> None:
    assert literature_groups(PVP, MYELOMA) == [
        ("pvp", "myeloma_plasmacytoma"),
        ("pvp", "metastasis_or_myeloma"),
        ("pvp", "mixed"),
        ("vertebral_augmentation", "myeloma_plasmacytoma"),
        ("vertebral_augmentation", "metastasis_or_myeloma"),
        ("vertebral_augmentation", "mixed"),
    ]
    assert literature_groups(PKP, HEMANGIOMA) == [
        ("pkp", "hemangioma"),
        ("pkp", "mixed"),
        ("vertebral_augmentation", "hemangioma"),
        ("vertebral_augmentation", "mixed"),
    ]
    # Radiotherapy is no vertebral augmentation: no pooled PVP/PKP figures.
    assert literature_groups(ProcedureType.RADIOTHERAPY, HEMANGIOMA) == [
        ("radiotherapy", "hemangioma"),
        ("radiotherapy", "mixed"),
    ]


def test_pooled_vertebral_augmentation_figure_is_an_approximate_comparator(
    catalog: BaselineCatalog,
) -> None:
    pooled = BaselineEntry.model_validate(
        {
            "id": "s001.test.pooled_death",
            "metric": "death_rate",
            "figure": "outcome",
            "procedure": "vertebral_augmentation",
            "indication": "hemangioma",
            "unit": "patient",
            "statistic": {"kind": "proportion", "numerator": 1, "denominator": 40},
            "source": catalog.baselines[0].source.model_dump(),
        },
        strict=False,
    )
    extended = catalog.model_copy(update={"baselines": (*catalog.baselines, pooled)})
    for procedure in (PVP, PKP):
        match = baseline_for(
            extended, "death_rate", procedure, HEMANGIOMA, unit="patient", timepoint=None
        )
        assert match is not None
        assert (match.entry_id, match.exact_cohort, match.value) == (pooled.id, False, 1 / 40)
    # The cohort's own figure still wins over the pooled one.
    own = baseline_for(extended, "death_rate", PVP, METASTASIS, unit="patient", timepoint=None)
    assert own is not None
    assert own.entry_id == "s003.table1.weill.death"
    assert (
        baseline_for(
            extended,
            "death_rate",
            ProcedureType.RADIOTHERAPY,
            HEMANGIOMA,
            unit="patient",
            timepoint=None,
        )
        is None
    )


# --- appropriateness signals: expected zero, citing the seeds' rules ------------


@pytest.mark.parametrize(
    "metric", ["pvp_alone_with_neurological_deficit_rate", "suspected_tumour_without_biopsy_rate"]
)
def test_expected_zero_rows_cite_a_rule_printed_in_the_seed(
    catalog: BaselineCatalog, metric: str
) -> None:
    row = _row(cohort_report(_hemangioma_series(), PVP, HEMANGIOMA, catalog), metric)
    assert row.expected_zero
    match = _baseline(row)
    assert (match.entry_id, match.value, match.described) == (None, 0.0, "expected 0")
    assert match.exact_cohort
    for source in (match.source, *match.further_sources):
        text = _seed_text(source.seed)
        assert " ".join(source.quote.split()) in text, source.quote
        assert source.locator in text, source.locator


def test_each_expected_zero_rule_is_cited_and_only_those_are(catalog: BaselineCatalog) -> None:
    expected_zero = {m.name for m in RATE_METRICS if m.expected_zero}
    assert expected_zero == set(PRACTICE_RULES)
    seeds = {source.seed[:3] for rule in PRACTICE_RULES.values() for source in rule.sources}
    assert seeds == {"002", "003", "004"}


def test_rules_written_for_hemangioma_are_approximate_elsewhere(catalog: BaselineCatalog) -> None:
    rows = cohort_report({}, PVP, OSTEOPOROTIC, catalog)
    assert _baseline(_row(rows, "pvp_alone_with_neurological_deficit_rate")).exact_cohort is False
    assert _baseline(_row(rows, "suspected_tumour_without_biopsy_rate")).exact_cohort is False
    myeloma = cohort_report({}, PVP, MYELOMA, catalog)
    assert _baseline(_row(myeloma, "suspected_tumour_without_biopsy_rate")).exact_cohort is True


def test_pvp_alone_signal_is_not_reported_for_kyphoplasty(catalog: BaselineCatalog) -> None:
    names = {row.metric for row in cohort_report({"patients": 5}, PKP, HEMANGIOMA, catalog)}
    assert "pvp_alone_with_neurological_deficit_rate" not in names
    assert "suspected_tumour_without_biopsy_rate" in names


def test_responder_rate_points_at_seed_003_definition(catalog: BaselineCatalog) -> None:
    rows = cohort_report(_hemangioma_series(), PVP, HEMANGIOMA, catalog)
    responders = [r for r in rows if r.metric == "responder_rate"]
    assert {"post_procedure", "final"} <= {r.timepoint for r in responders}
    ids = {r.definition_id for r in responders}
    assert len(ids) == 1
    definition = next(e for e in catalog.baselines if e.id in ids)
    assert definition.figure is Figure.DEFINITION
    assert isinstance(definition.statistic, Threshold)
    assert definition.statistic.value == RESPONDER_REDUCTION
    assert all(r.baseline is None for r in responders)


def test_catalog_metric_names_exist_in_the_catalog(catalog: BaselineCatalog) -> None:
    known = {entry.metric for entry in catalog.baselines}
    named = {m.catalog_metric for m in RATE_METRICS if m.catalog_metric}
    # Infection is a complication the product records but no seed quantifies.
    assert named - known == {"infection_rate"}
    assert {
        "pulmonary_cement_embolism_rate",
        "radiculopathy_rate",
        "neurological_deficit_rate",
        "new_vertebral_fracture_rate",
        "reoperation_rate",
        "death_rate",
    } <= {m.name for m in RATE_METRICS}


# --- empty cohorts, order, summing ----------------------------------------------


def test_rows_without_data_are_kept_with_value_none(catalog: BaselineCatalog) -> None:
    rows = cohort_report({}, PVP, HEMANGIOMA, catalog)
    rates = [m for m in RATE_METRICS if m.only_for in (None, PVP)]
    assert len(rows) == len(rates) + len(VAS_SERIES)
    for row in rows:
        assert (row.value, row.low, row.high, row.sd, row.denominator) == (
            None,
            None,
            None,
            None,
            0,
        )
        assert row.numerator == (0 if row.kind == "rate" else None)
    partial = cohort_report(_hemangioma_series(), PVP, HEMANGIOMA, catalog)
    assert _row(partial, "responder_rate", "final").value is None
    assert _row(partial, "vas_score", "final").value is None
    assert _row(partial, "vas_score", "final").baseline is not None


def test_rows_come_out_in_a_stable_order(catalog: BaselineCatalog) -> None:
    def keys(tally: Tally) -> list[tuple[str, str | None]]:
        return [(r.metric, r.timepoint) for r in cohort_report(tally, PVP, METASTASIS, catalog)]

    empty, full = keys({}), keys(_hemangioma_series())
    assert empty == full
    assert len(set(full)) == len(full)
    assert full[0] == ("cement_leakage_rate_per_level", "intra_procedure")
    kinds = [r.kind for r in cohort_report({}, PVP, METASTASIS, catalog)]
    assert kinds == sorted(kinds, key=["rate", "mean"].index)
    assert keys(dict(reversed(list(_hemangioma_series().items())))) == full
    assert cohort_report(_hemangioma_series(), PVP, METASTASIS, catalog) == cohort_report(
        _hemangioma_series(), PVP, METASTASIS, catalog
    )


def test_sum_tallies_adds_names_and_drops_zeros() -> None:
    total = sum_tallies(
        [{"patients": 2, "levels_with_leakage": 1}, {"patients": 3}, {"levels_with_leakage": -1}]
    )
    assert total == {"patients": 5}
    assert sum_tallies([]) == {}


def test_inconsistent_tally_is_refused(catalog: BaselineCatalog) -> None:
    with pytest.raises(ValueError, match="cement_leakage_rate_per_level"):
        cohort_report(
            {"levels_with_leakage": 4, "levels_assessed_for_leakage": 3}, PVP, HEMANGIOMA, catalog
        )


@pytest.mark.parametrize(
    ("with_complication", "patients", "position"),
    [(20, 100, "above"), (2, 100, "within"), (0, 1000, "below"), (4, 100, "within")],
)
def test_a_rate_outside_a_published_range_is_flagged_by_its_whole_interval(
    with_complication: int, patients: int, position: str
) -> None:
    # Pilitis (seed 003): complications 1-3% in osteoporotic collapse. 4/100
    # is above 3%, but its interval (1.6%-9.8%) is not wholly above it.
    tally = {"patients": patients, "patients_with_complication": with_complication}
    rows = cohort_report(tally, ProcedureType.PVP, Indication.OSTEOPOROTIC, load_catalog())
    (row,) = [r for r in rows if r.metric == "complication_rate"]
    # The range is only flagged against: there is no point comparator.
    assert row.baseline is None
    assert row.published_range is not None
    assert (row.published_range.entry_id, row.published_range.low, row.published_range.high) == (
        "s003.pilitis.osteoporotic",
        0.01,
        0.03,
    )
    assert row.range_position() == position
    # Radiculopathy has a point comparator and no published range: no flag.
    (radiculopathy,) = [r for r in rows if r.metric == "radiculopathy_rate"]
    assert radiculopathy.baseline is not None
    assert radiculopathy.range_position() is None
