"""The comparator policy: point estimates only, one table, every reader agreeing with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinewatch.baselines import load_catalog
from spinewatch.baselines.model import BaselineCatalog, Proportion, Share
from spinewatch.baselines.policy import ComparatorChoice, ComparatorPolicy, load_policy
from spinewatch.cli.main import main
from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.domain.drift.design import chart_probability, design_charts, monitorable_metrics
from spinewatch.domain.outcomes.baseline_match import cite
from spinewatch.domain.outcomes.comparator_policy import policy_table, resolve
from spinewatch.domain.outcomes.comparator_table import (
    POLICY_DOCUMENT,
    policy_problems,
    render_policy,
)
from spinewatch.domain.outcomes.report import cohort_report
from spinewatch.engine.metrics import _add_row, _Families
from spinewatch.errors import ChartDesignError

ROOT = Path(__file__).resolve().parents[1]
PVP, PKP = ProcedureType.PVP, ProcedureType.PKP


@pytest.fixture(scope="module")
def catalog() -> BaselineCatalog:
    return load_catalog()


def _chartable_metrics(catalog: BaselineCatalog) -> list[str]:
    names = []
    for name in monitorable_metrics():
        try:
            design_charts(catalog, (name,), (2.0,), 200)
        except ChartDesignError:
            continue
        names.append(name)
    return names


def test_no_chart_p0_comes_from_a_range_or_bound_and_each_is_the_policy_table_s(
    catalog: BaselineCatalog,
) -> None:
    by_id = {entry.id: entry for entry in catalog.baselines}
    table = {
        (r.metric.name, r.procedure.value, r.indication.value): r for r in policy_table(catalog)
    }
    names = _chartable_metrics(catalog)
    # Every default drift metric is among them (the worker refuses one with nothing to chart).
    assert {"cement_leakage_rate_per_level", "cement_leakage_rate_per_patient"} <= set(names)
    charted = set()
    for chart in design_charts(catalog, names, (2.0,), 200):
        for (procedure, indication), risk in chart.strata.items():
            entry = by_id[risk.baseline.entry_id or ""]
            # The basis is a point estimate of a proportion or share entry...
            assert isinstance(entry.statistic, Proportion | Share), entry.id
            assert risk.basis == "published value"
            assert risk.p0 == entry.statistic.value
            assert 0 < risk.p0 < 1
            # ...and exactly the one the policy table names for the stratum.
            row = table[(chart.metric_name, procedure, indication)]
            assert row.status == "charted"
            assert row.match is not None
            assert row.match.entry_id == entry.id
            assert row.p0 == risk.p0
            charted.add((chart.metric_name, procedure, indication))
    # Conversely, every chartable row of the table (for the charted metrics) is charted.
    expected = {key for key, row in table.items() if row.status == "charted" and key[0] in names}
    assert charted == expected
    assert len(charted) >= 15


def test_chart_probability_refuses_ranges_bounds_and_zeros(catalog: BaselineCatalog) -> None:
    leak = monitorable_metrics()["cement_leakage_rate_per_level"]
    bound = resolve(catalog, leak, PVP, Indication.METASTASIS).published_range
    assert bound is not None
    assert (bound.entry_id, bound.kind) == ("s001.leakage.pvp_up_to_65", "bound")
    with pytest.raises(ChartDesignError, match="never charted"):
        chart_probability(bound)
    embolism = monitorable_metrics()["pulmonary_cement_embolism_rate"]
    zero = resolve(catalog, embolism, PVP, Indication.HEMANGIOMA)
    assert zero.status == "sentinel"
    assert zero.match is not None
    with pytest.raises(ChartDesignError, match="sentinel"):
        chart_probability(zero.match)


def test_a_preferred_bound_still_never_becomes_a_p0(catalog: BaselineCatalog) -> None:
    # PKP per-level leakage: the catalog's preferred entry is the bound "< 10%".
    leak = monitorable_metrics()["cement_leakage_rate_per_level"]
    resolution = resolve(catalog, leak, PKP, Indication.OSTEOPOROTIC)
    assert resolution.status == "none"
    assert resolution.p0 is None
    assert resolution.published_range is not None
    assert resolution.published_range.entry_id == "s001.leakage.pkp_below_10"
    assert "range is never charted" in resolution.reason


def test_every_row_says_what_it_compares_with_or_why_not(catalog: BaselineCatalog) -> None:
    rows = list(policy_table(catalog))
    # Every rate metric with a catalog figure x {pvp, pkp} x indication.
    assert len(rows) == len({(r.metric.name, r.procedure, r.indication) for r in rows})
    assert len(rows) >= 150
    for row in rows:
        assert row.reason
        if row.match is None:
            assert row.status == "none"
            assert row.basis.startswith("none: ")
            continue
        # Never a figure of the other procedure.
        assert row.match.literature_procedure in (row.procedure.value, "vertebral_augmentation")
        assert row.match.is_point_estimate
        if row.status == "zero":
            assert "not chartable" in row.reason
        if not row.match.exact_cohort:
            assert row.basis.startswith("approximate: ")


def test_policy_choices_resolve_as_written(catalog: BaselineCatalog) -> None:
    policy = load_policy()
    assert policy_problems(catalog, policy) == []
    metrics = {m.name: m for m in monitorable_metrics().values()}
    for choice in policy.choices:
        resolution = resolve(
            catalog,
            metrics[choice.metric],
            ProcedureType(choice.procedure),
            Indication(choice.indication),
        )
        assert resolution.choice == choice
        assert (resolution.match.entry_id if resolution.match else None) == choice.entry
        if choice.range_entry:
            assert resolution.published_range is not None
            assert resolution.published_range.entry_id == choice.range_entry


def test_a_choice_borrowing_the_other_procedure_s_figure_is_a_problem(
    catalog: BaselineCatalog,
) -> None:
    bad = ComparatorPolicy(
        policy_version="2026.12.1",
        choices=(
            ComparatorChoice(
                metric="complication_rate",
                procedure="pkp",
                indication="metastasis",
                entry="s003.pilitis.metastasis",
                why="borrowing PVP's 10% for PKP, which the policy forbids",
            ),
            ComparatorChoice(
                metric="complication_rate",
                procedure="pvp",
                indication="osteoporotic",
                entry="s003.pilitis.osteoporotic",
                why="a range chosen as the point comparator, also forbidden",
            ),
        ),
    )
    problems = policy_problems(catalog, bad)
    assert any("outside the cohort's groups" in p and "pkp/metastasis" in p for p in problems)
    assert any("is not a point estimate (range)" in p for p in problems)


def test_the_committed_policy_document_equals_the_render(catalog: BaselineCatalog) -> None:
    committed = (ROOT / POLICY_DOCUMENT).read_text(encoding="utf-8")
    assert committed == render_policy(catalog), (
        "regenerate: spinewatch baselines --policy > " + POLICY_DOCUMENT
    )
    row = next(
        line
        for line in committed.splitlines()
        if line.startswith("| symptomatic_cement_leakage_rate | pvp | metastasis |")
    )
    assert "s003.table1.weill.symptomatic_leakage 3/37" in row
    assert "Weill 1996 (ref. 12), in Barbanti Bròdano et al., review (seed 003)" in row


def test_citations_name_author_or_series_year_and_seed(catalog: BaselineCatalog) -> None:
    assert all(seed.citation for seed in catalog.seeds)
    death = monitorable_metrics()["death_rate"]
    match = resolve(catalog, death, PVP, Indication.METASTASIS).match
    assert match is not None
    assert cite(match) == (
        "Weill 1996 (ref. 12), in Barbanti Bròdano et al., review (seed 003), "
        'Table I, Weill (1996) row: "2 pts (5%) death"'
    )
    (row,) = [
        r
        for r in cohort_report({}, PVP, Indication.METASTASIS, catalog)
        if r.metric == "death_rate"
    ]
    assert row.citation == cite(match)
    leak = monitorable_metrics()["cement_leakage_rate_per_level"]
    own = resolve(catalog, leak, PVP, Indication.HEMANGIOMA).match
    assert own is not None
    # The seed's own series: no study inside it, so the seed's label.
    assert cite(own).startswith(
        "PVP for vertebral hemangioma, 26-patient series, Pain Physician 2012 (seed 000), "
    )


def test_outside_range_flag_and_funnel_use_range_and_point_apart(
    catalog: BaselineCatalog,
) -> None:
    labels = ["site-a", "pvp", "osteoporotic", "all", "complication_rate", ""]
    # Complications in osteoporotic collapse: 1-3% published (Pilitis), no point.
    tally = {"patients": 100, "patients_with_complication": 20}
    (row,) = [
        r
        for r in cohort_report(tally, PVP, Indication.OSTEOPOROTIC, catalog)
        if r.metric == "complication_rate"
    ]
    families = _Families()
    _add_row(families, labels, row)
    (flag,) = families.outside_range.samples
    assert flag.value == 1  # 20/100: the whole interval is above 3%
    assert families.p_value.samples == []  # no point estimate: no p-value, no funnel
    assert families.funnel_high.samples == []
    # Against a point comparator (metastases: Pilitis 10%), a p-value and no flag.
    (row,) = [
        r
        for r in cohort_report(tally, PVP, Indication.METASTASIS, catalog)
        if r.metric == "complication_rate"
    ]
    families = _Families()
    _add_row(families, [*labels[:2], "metastasis", *labels[3:]], row)
    assert families.outside_range.samples == []
    (p_value,) = families.p_value.samples
    assert 0 < p_value.value < 0.01


def test_a_zero_point_estimate_is_reported_not_charted(catalog: BaselineCatalog) -> None:
    leak = monitorable_metrics()["cement_leakage_rate_per_patient"]
    resolution = resolve(catalog, leak, PKP, Indication.METASTASIS)
    assert resolution.status == "zero"
    assert resolution.match is not None
    assert resolution.match.entry_id == "s003.leakage.vp_vs_kp.kp"
    assert "published 0" in resolution.reason
    assert "not chartable" in resolution.reason
    # The same stratum is absent from the chart, never charted at PVP's 9.2%.
    (chart,) = design_charts(catalog, ("cement_leakage_rate_per_patient",), (2.0,), 200)
    assert ("pkp", "metastasis") not in chart.strata
    assert resolution.p0 is None


def test_the_cli_prints_the_committed_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["baselines", "--policy"]) == 0
    assert capsys.readouterr().out == (ROOT / POLICY_DOCUMENT).read_text(encoding="utf-8")
