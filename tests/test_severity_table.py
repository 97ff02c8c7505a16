"""The severity table (README, `domain/alerts/policy.py`) agrees with the catalog's figures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spinewatch.baselines import load_catalog
from spinewatch.baselines.model import BaselineCatalog, Proportion
from spinewatch.domain.alerts import policy
from spinewatch.domain.alerts.policy import SENTINEL_METRICS, SENTINEL_SEED_FIGURES

ROOT = Path(__file__).resolve().parents[1]
# A cited figure: an entry id, then the count it states, e.g. "s003.table1.weill.death, 2/37".
CITED = re.compile(r"`?(s\d{3}\.[a-z0-9_.]*[a-z0-9])`?,\s+(\d+)/(\d+)")


def _severity_rows() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    alerting = readme.split("\n## Alerting", 1)[1].split("\n## ", 1)[0]
    table = [line for line in alerting.splitlines() if line.startswith("| ")]
    header, *rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert header[:2] == ["severity", "metrics"]
    return rows


def _check_cited(catalog: BaselineCatalog, text: str) -> set[str]:
    """Every cited id exists, measures a sentinel, and states the printed count."""
    by_id = {entry.id: entry for entry in catalog.baselines}
    cited = set()
    for entry_id, numerator, denominator in CITED.findall(text):
        entry = by_id[entry_id]
        assert isinstance(entry.statistic, Proportion), entry_id
        assert (entry.statistic.numerator, entry.statistic.denominator) == (
            int(numerator),
            int(denominator),
        ), entry_id
        assert entry.metric in SENTINEL_METRICS, entry_id
        cited.add(entry.metric)
    return cited


@pytest.fixture(scope="module")
def catalog() -> BaselineCatalog:
    return load_catalog()


def test_readme_critical_rows_cite_the_catalog_figures(catalog: BaselineCatalog) -> None:
    rows = _severity_rows()
    critical = [row for row in rows if row[0] == "critical"]
    assert len(critical) == len(SENTINEL_METRICS)
    covered = set()
    for row in critical:
        assert "catastrophic" in row[2]
        metrics = _check_cited(catalog, row[3])
        assert len(metrics) == 1, row
        covered |= metrics
    assert covered == set(SENTINEL_METRICS)
    # What the old table claimed, and the catalog contradicts.
    assert not any("report none" in cell for row in rows for cell in row)


def test_every_sentinel_figure_in_the_catalog_is_stated(catalog: BaselineCatalog) -> None:
    # The catalog's own sentinel figures (outcome proportions of the seeds'
    # cohorts): each must be cited in the README's table.
    rows = _severity_rows()
    cited_ids = {match[0] for row in rows for match in CITED.findall(" ".join(row))}
    preferred = {
        entry.id
        for entry in catalog.baselines
        if entry.metric in SENTINEL_METRICS and entry.preferred
    } | {"s003.table1.kaemmerlen.myelopathy"}
    assert preferred <= cited_ids


def test_policy_docstring_and_page_text_cite_the_same_figures(catalog: BaselineCatalog) -> None:
    assert policy.__doc__ is not None
    assert _check_cited(catalog, policy.__doc__) == set(SENTINEL_METRICS)
    assert set(SENTINEL_SEED_FIGURES) == set(SENTINEL_METRICS)
    for metric, text in SENTINEL_SEED_FIGURES.items():
        assert _check_cited(catalog, text) == {metric}
