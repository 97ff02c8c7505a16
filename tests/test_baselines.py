"""The baseline catalog: complete, valid, and every figure traceable to its seed."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import pytest

from spinewatch.baselines import (
    BaselineEntry,
    comparators,
    load_catalog,
    parse_catalog,
    verify_catalog,
)
from spinewatch.baselines.model import (
    Bound,
    MeanSd,
    Proportion,
    Share,
    Threshold,
    ValueRange,
)
from spinewatch.cli.main import main
from spinewatch.errors import CatalogError

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
CATALOG_TEXT = files("spinewatch.baselines").joinpath("catalog.toml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def seeds() -> Path:
    assert SEEDS.is_dir(), f"seed documents expected at {SEEDS} (../shared/seeds)"
    return SEEDS


def test_every_quote_and_figure_stands_in_its_seed(seeds: Path) -> None:
    catalog = load_catalog()
    assert len(catalog.baselines) >= 60
    assert [str(p) for p in verify_catalog(catalog, seeds)] == []


def test_every_seed_is_cited(seeds: Path) -> None:
    cited = {entry.source.seed for entry in load_catalog().baselines}
    assert cited == {path.name for path in seeds.glob("*.txt")}


# --- the figures the product promises to carry --------------------------------


def _has(predicate: Callable[[BaselineEntry], bool]) -> bool:
    return any(predicate(entry) for entry in load_catalog().baselines)


def _mean_sd(
    metric: str, mean: float, sd: float, timepoint: str
) -> Callable[[BaselineEntry], bool]:
    return lambda e: (
        e.metric == metric
        and e.timepoint == timepoint
        and isinstance(e.statistic, MeanSd)
        and (e.statistic.mean, e.statistic.sd) == (mean, sd)
    )


def _proportion(metric: str, num: int, den: int) -> Callable[[BaselineEntry], bool]:
    return lambda e: (
        e.metric == metric
        and isinstance(e.statistic, Proportion)
        and (e.statistic.numerator, e.statistic.denominator) == (num, den)
    )


def _share(metric: str, value: float) -> Callable[[BaselineEntry], bool]:
    return lambda e: (
        e.metric == metric
        and isinstance(e.statistic, Share | Threshold)
        and abs(e.statistic.value - value) < 1e-9
    )


def _range(metric: str, low: float, high: float) -> Callable[[BaselineEntry], bool]:
    return lambda e: (
        e.metric == metric
        and isinstance(e.statistic, ValueRange)
        and (e.statistic.low, e.statistic.high) == (low, high)
    )


def _bound(
    metric: str, procedure: str, comparator: str, value: float
) -> Callable[[BaselineEntry], bool]:
    return lambda e: (
        e.metric == metric
        and e.procedure == procedure
        and isinstance(e.statistic, Bound)
        and (e.statistic.comparator, e.statistic.value) == (comparator, value)
    )


REQUIRED = {
    "VAS pre 7.4 ± 1.6": _mean_sd("vas_score", 7.4, 1.6, "pre_procedure"),
    "VAS post 1.7 ± 0.6": _mean_sd("vas_score", 1.7, 0.6, "post_procedure"),
    "VAS final 0.7 ± 0.4": _mean_sd("vas_score", 0.7, 0.4, "final"),
    "abstract VAS pre 7.5 ± 1.5": _mean_sd("vas_score", 7.5, 1.5, "pre_procedure"),
    "leakage 3 of 28 levels": _proportion("cement_leakage_rate", 3, 28),
    "symptomatic leakage 1 of 26": _proportion("symptomatic_cement_leakage_rate", 1, 26),
    "no pulmonary embolism": _proportion("pulmonary_cement_embolism_rate", 0, 26),
    "published success 80-100%": _range("treatment_success_rate", 0.8, 1.0),
    "published complication 1-10%": _range("complication_rate", 0.01, 0.10),
    "kyphoplasty extravasation < 10%": _bound("cement_leakage_rate", "pkp", "<", 0.10),
    "vertebroplasty leakage up to 65%": _bound("cement_leakage_rate", "pvp", "<=", 0.65),
    "2.5% vertebroplasty complication in hemangioma": _share("complication_rate", 0.025),
    "5 of 148 nerve-root pain": _proportion("radiculopathy_rate", 5, 148),
    "7 of 31 same or more analgesics": _proportion("analgesic_same_or_more_rate", 7, 31),
    "complication 10% metastases": _share("complication_rate", 0.10),
    "complication 2-5% hemangioma": _range("complication_rate", 0.02, 0.05),
    "complication 1-3% osteoporotic": _range("complication_rate", 0.01, 0.03),
    "asymptomatic leakage 2-73% per level": _range("asymptomatic_cement_leakage_rate", 0.02, 0.73),
    "9.2% leakage with VP": _share("cement_leakage_rate", 0.092),
    "0% leakage with KP in cancer patients": lambda e: (
        _share("cement_leakage_rate", 0.0)(e) and e.procedure == "pkp"
    ),
    "50% pain reduction is a good result": _share("pain_reduction_good_result", 0.5),
    "Weill: 2 of 37 deaths": _proportion("death_rate", 2, 37),
    "Weill: 73% good relief": _share("pain_relief_good", 0.73),
    "Cortet: 13.5% complete relief": _share("pain_relief_complete", 0.135),
    "Kaemmerlen: 70% very good relief": _share("pain_relief_very_good", 0.70),
    "Deramond: 80% very good relief": _share("pain_relief_very_good", 0.80),
    "Gangi: 85% very good or good": _share("pain_relief_very_good_or_good", 0.85),
}


@pytest.mark.parametrize("figure", sorted(REQUIRED))
def test_catalog_holds_the_promised_figure(figure: str) -> None:
    assert _has(REQUIRED[figure]), figure


def test_catalog_holds_seed_002_004_outcomes() -> None:
    proportions = {
        (e.statistic.numerator, e.statistic.denominator)
        for e in load_catalog().baselines
        if isinstance(e.statistic, Proportion)
    }
    assert {(3, 4), (7, 9), (7, 10)} <= proportions
    shares = {
        round(e.statistic.value, 3)
        for e in load_catalog().baselines
        if isinstance(e.statistic, Share)
    }
    assert {0.57, 0.32, 0.11, 0.5} <= shares


@pytest.mark.parametrize("study", ["Deramond", "Weill", "Cortet", "Kaemmerlen", "Gangi"])
def test_every_row_of_seed_003_table_i_is_catalogued(study: str) -> None:
    rows = [
        e
        for e in load_catalog().baselines
        if e.source.seed.startswith("003_") and e.study and e.study.startswith(study)
    ]
    assert any(e.metric.startswith("pain_relief_") for e in rows), study


def test_disagreements_inside_seed_000_are_noted() -> None:
    noted = [e for e in load_catalog().baselines if e.source.seed.startswith("000_") and e.note]
    text = " ".join(e.note or "" for e in noted).lower()
    assert "abstract" in text
    assert "foraminal" in text


def test_preferred_comparator_comes_first() -> None:
    found = comparators(load_catalog(), "cement_leakage_rate", "pvp", "hemangioma")
    assert found[0].preferred
    assert isinstance(found[0].statistic, Proportion)
    assert (found[0].statistic.numerator, found[0].statistic.denominator) == (3, 28)


# --- the provenance check catches what it must ---------------------------------


@pytest.mark.parametrize(
    ("original", "tampered", "complaint"),
    [
        ("mean = 7.4, sd = 1.6", "mean = 7.4, sd = 1.7", "not printed as a pair"),
        ("numerator = 3, denominator = 28", "numerator = 4, denominator = 28", "figure 4"),
        ("value = 0.092", "value = 0.093", "figure 9.3"),
        (
            "No pulmonary embolism ever occurred",
            "No pulmonary embolism ever occured",
            "quote not found",
        ),
        ("numerator = 0, denominator = 26", "numerator = 1, denominator = 26", "figure 1"),
        ("numerator = 1, denominator = 118000", "numerator = 1, denominator = 118", "figure 118"),
        (
            'quote = "No local complication (cement leakage) was found in the KP group" }',
            'quote = "local complication (cement leakage) was found in the KP group" }',
            "zero share",
        ),
    ],
)
def test_tampering_with_a_figure_or_quote_is_caught(
    original: str, tampered: str, complaint: str, seeds: Path
) -> None:
    assert original in CATALOG_TEXT
    problems = verify_catalog(parse_catalog(CATALOG_TEXT.replace(original, tampered, 1)), seeds)
    assert any(complaint in str(p) for p in problems), problems


def test_a_missing_seed_file_is_reported(tmp_path: Path) -> None:
    problems = verify_catalog(load_catalog(), tmp_path)
    assert {p.entry_id for p in problems} == {seed.file for seed in load_catalog().seeds}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('id = "s000.vas.pre.abstract"', 'id = "s000.vas.pre"'), "duplicate"),
        (
            lambda t: t.replace(
                'file = "004_d9055c89a89cc58a.txt"', 'file = "009_d9055c89a89cc58a.txt"'
            ),
            "undeclared",
        ),
        (
            lambda t: t.replace(
                "numerator = 3, denominator = 28", "numerator = 30, denominator = 28"
            ),
            "exceeds",
        ),
        (lambda t: t.replace('catalog_version = "', 'catalog_version = "v'), "catalog_version"),
    ],
)
def test_malformed_catalog_is_rejected(edit: Callable[[str], str], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_catalog(edit(CATALOG_TEXT))


def test_two_preferred_comparators_for_one_cohort_are_rejected() -> None:
    text = CATALOG_TEXT.replace(
        'note = "Disagrees with Table 1', 'preferred = true\nnote = "Disagrees with Table 1', 1
    )
    with pytest.raises(CatalogError, match="both preferred"):
        parse_catalog(text)


# --- command line ---------------------------------------------------------------


def test_baselines_json_prints_the_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["baselines", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(load_catalog().model_dump_json())
    assert all(entry["source"]["quote"] for entry in printed["baselines"])


def test_baselines_verify_passes_on_the_seeds(
    seeds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["baselines", "--verify", "--seeds", str(seeds)]) == 0
    assert "0 provenance problems" in capsys.readouterr().out


def test_baselines_verify_fails_without_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["baselines", "--verify", "--seeds", str(tmp_path)]) == 1
    assert "seed file missing" in capsys.readouterr().err


def test_baselines_table_lists_every_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["baselines"]) == 0
    out = capsys.readouterr().out
    assert all(entry.id in out for entry in load_catalog().baselines)
