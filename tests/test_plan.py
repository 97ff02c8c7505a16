"""`spinewatch plan`: a chart design from the catalog baseline and the site's volume."""

from __future__ import annotations

import json

import pytest

from spinewatch.baselines import load_catalog
from spinewatch.cli.main import main
from spinewatch.domain.drift.arl import run_lengths


def _plan(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["plan", *args, "--json"]) == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


def test_plan_json_for_seed_000_leakage(capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(
        capsys,
        "--metric", "cement_leakage_rate_per_level", "--procedure", "pvp",
        "--indication", "hemangioma", "--volume", "12/month", "--shift", "2",
        "--arl0-months", "24",
    )  # fmt: skip
    entry = next(e for e in load_catalog().baselines if e.id == "s000.leakage.per_level")
    assert plan["p0"] == pytest.approx(entry.statistic.value)  # type: ignore[union-attr]
    citation = plan["citation"]
    assert isinstance(citation, dict)
    assert citation["baseline_id"] == "s000.leakage.per_level"
    assert citation["seed"] == entry.source.seed
    assert plan["odds_ratio"] == 2.0
    # The target is 24 months of treated levels at 12 procedures a month.
    trials_per_month = plan["trials_per_month"]
    assert isinstance(trials_per_month, float)
    assert 24 <= plan["arl0_months"] < 24 * 1.05  # type: ignore[operator]
    assert plan["arl0"] == pytest.approx(plan["arl0_months"] * trials_per_month)  # type: ignore[operator]
    assert plan["arl1_months"] == pytest.approx(plan["arl1"] / trials_per_month)  # type: ignore[operator]
    # h reproduces the reported run lengths.
    arl0, arl1 = run_lengths([(plan["p0"], 1.0)], 2.0, plan["h"])  # type: ignore[list-item, arg-type]
    assert arl0 == pytest.approx(plan["arl0"])
    assert arl1 == pytest.approx(plan["arl1"])


def test_a_published_range_is_never_charted(capsys: pytest.CaptureFixture[str]) -> None:
    # Seed 003 (Pilitis) gives complications in osteoporotic collapse only as
    # 1-3%: no point estimate, so no chart, and the refusal says why.
    code = main(
        [
            "plan", "--metric", "complication_rate", "--procedure", "pvp",
            "--indication", "osteoporotic", "--volume", "20/month", "--arl0-cases", "1000",
        ]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "no chartable comparator" in err
    assert "1-3%" in err or "1%-3%" in err


def test_plan_cites_author_year_and_seed(capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(
        capsys,
        "--metric", "symptomatic_cement_leakage_rate", "--procedure", "pvp",
        "--indication", "metastasis", "--volume", "20/month", "--arl0-cases", "1000",
    )  # fmt: skip
    assert plan["p0_basis"] == "published value"
    assert plan["p0"] == pytest.approx(3 / 37)  # Weill 1996: 3 of 37 patients
    citation = plan["citation"]
    assert isinstance(citation, dict)
    assert citation["baseline_id"] == "s003.table1.weill.symptomatic_leakage"
    assert citation["cite"].startswith(
        "Weill 1996 (ref. 12), in Barbanti Bròdano et al., review (seed 003)"
    )
    assert "caused by cement leakage" in citation["cite"]


def test_a_zero_baseline_is_a_sentinel_not_a_chart(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "plan", "--metric", "pulmonary_cement_embolism_rate", "--procedure", "pvp",
            "--indication", "hemangioma", "--volume", "8/month",
        ]
    )  # fmt: skip
    assert code == 1
    assert "sentinel" in capsys.readouterr().err


def test_text_plan_states_delay_in_cases_and_months(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--metric", "complication_rate", "--procedure", "pvp", "--indication", "metastasis"]
    assert main(["plan", *args, "--volume", "8/month"]) == 0
    text = capsys.readouterr().out
    assert "s003.pilitis.metastasis" in text
    assert "months at 8 procedures/month" in text
    with pytest.raises(SystemExit) as usage:
        main(["plan", "--metric", "nonsense", *args[2:], "--volume", "8/month"])
    assert usage.value.code == 2
    assert "choose from" in capsys.readouterr().err


COHORT = ["--metric", "complication_rate", "--procedure", "pvp", "--indication", "metastasis"]


def test_values_are_case_insensitive(capsys: pytest.CaptureFixture[str]) -> None:
    lower = _plan(capsys, *COHORT, "--volume", "5/month")
    upper = _plan(
        capsys,
        "--metric", "COMPLICATION_RATE", "--procedure", "PVP", "--indication", "Metastasis",
        "--volume", "5/Month",
    )  # fmt: skip
    assert upper == lower
    assert upper["procedure"] == "pvp"


def test_the_default_budget_is_the_workers_60_months(capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(capsys, *COHORT, "--volume", "5/month")
    assert 60 <= plan["arl0_months"] < 60 * 1.05  # type: ignore[operator]
    # A year's volume is the same site.
    assert _plan(capsys, *COHORT, "--volume", "60/year") == plan


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ("5", "give a unit, e.g. 5/month or 60/year"),
        ("-3/month", "volume must be positive"),
        ("0/month", "volume must be positive"),
        ("5/fortnight", "use /week, /month or /year"),
        ("many", "is not a volume"),
    ],
)
def test_a_bad_volume_is_refused_with_its_reason(
    capsys: pytest.CaptureFixture[str], volume: str, message: str
) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["plan", *COHORT, "--volume", volume])
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "expected one argument" not in err


def test_help_lists_every_valid_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["plan", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for value in ("pvp", "pkp", "hemangioma", "metastasis", "myeloma_plasmacytoma", "other"):
        assert value in text
    for metric in ("cement_leakage_rate_per_level", "complication_rate", "reoperation_rate"):
        assert metric in text


def test_a_cohort_plan_needs_its_inputs_and_site_needs_a_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plan", "--metric", "complication_rate", "--volume", "5/month"]) == 2
    assert "give --procedure, --indication" in capsys.readouterr().err
    assert main(["plan", "--site", "north"]) == 1
    assert "--site needs --metrics-url" in capsys.readouterr().err
    url = "http://127.0.0.1:9/metrics"
    assert main(["plan", "--site", "north", "--metrics-url", url, "--volume", "5/month"]) == 1
    assert "drop --volume" in capsys.readouterr().err
