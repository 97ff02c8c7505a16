"""The governance report as a person reads it: rendered, opened in real headless Chromium.

A seeded cohort (one site's leakage odds double a third of the way in) is
written as JSON Lines, reported with `spinewatch report`'s code, and the
page opened in the Debian `chromium` driven by playwright. The flags in the
page are checked against a computation from the raw events made here, with
scipy and plain arithmetic (not the report's code): counts, Wilson
intervals, exact binomial funnel limits with Spiegelhalter's interpolation,
the published range, and the site's risk-adjusted CUSUM.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright
from scipy import stats

from spinewatch.cli.main import main as cli_main
from spinewatch.demo.drift import DRIFTING_SITE, with_drifting_site
from spinewatch.demo.synthetic.cohort import default_sites, encode, generate_cohort
from spinewatch.domain.governance.model import Scope
from spinewatch.engine.settings import Settings
from spinewatch.report.main import Written, report_from_files

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / ".artifacts" / "report.png"
LEAKAGE = "cement_leakage_rate_per_level"
ODDS_RATIO = 2.0  # the default SPINEWATCH_DRIFT_ODDS_RATIOS
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    """A missing browser fails, never skips: a skipped test would prove nothing."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is missing: run ./dev test as root once (apt-get install)")


@pytest.fixture(scope="module")
def cohort_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    cohort = generate_cohort(19, with_drifting_site(default_sites(900)))
    path = tmp_path_factory.mktemp("cohort") / "events.jsonl"
    path.write_bytes(b"\n".join(encode(e) for e in cohort.events) + b"\n")
    return path, [dict(e) for e in cohort.events]


@pytest.fixture(scope="module")
def written(
    cohort_file: tuple[Path, list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory
) -> Written:
    work = tmp_path_factory.mktemp("report")
    settings = Settings(data_dir=work / "data")
    return report_from_files(
        [cohort_file[0]], settings, Scope(None, None, ()), work / "out", pdf=False
    )


@pytest.fixture(scope="module")
def page(written: Written) -> Iterator[tuple[Any, list[str]]]:
    errors: list[str] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 1800})
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(written.html.resolve().as_uri(), wait_until="load")
            yield tab, errors
        finally:
            browser.close()


# --- the independent computation ---------------------------------------------------


Case = tuple[str, str, str, str, str, int, int]


def leakage_cases(events: list[dict[str, Any]]) -> list[Case]:
    """(occurred_at, procedure id, site, stratum..., leaking levels, levels assessed) of
    every procedure not retracted, in clinical order."""
    retracted = {e["target_event_id"] for e in events if e["event_type"] == "event.retracted"}
    cases: list[Case] = []
    for event in events:
        if event["event_type"] != "procedure.performed" or event["event_id"] in retracted:
            continue
        levels = [
            level
            for level in event["levels"]
            if level.get("leakage_imaging") not in (None, "not_assessed")
        ]
        leaking = sum(1 for level in levels if level.get("leakages"))
        cases.append((event["occurred_at"], event["procedure_id"], event["site_id"],
                      event["procedure_type"], event["indication"], leaking, len(levels)))  # fmt: skip
    return sorted(cases, key=lambda c: (c[0], c[1]))  # a UUID's text sorts as its bytes


def spiegelhalter(n: int, p0: float, tail: float) -> float:
    r = stats.binom.ppf(tail, n, p0)
    at, below = stats.binom.cdf(r, n, p0), stats.binom.cdf(r - 1, n, p0)
    return max(0.0, float(r - ((at - tail) / (at - below) if at > below else 0.0)) / n)


def wilson(k: int, n: int) -> tuple[float, float]:
    z = stats.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def expected_flags(
    k: int, n: int, p0: float | None, bounds: tuple[float, float] | None
) -> set[str]:
    found = set()
    if bounds is not None and n:
        low, high = wilson(k, n)
        if low > bounds[1]:
            found.add("above-range")
        elif high < bounds[0]:
            found.add("below-range")
    if p0 is not None and n:
        for coverage, name in ((0.95, "95"), (0.998, "99.8")):
            tail = (1 - coverage) / 2
            if k / n > spiegelhalter(n, p0, 1 - tail):
                found.add(f"above-{name}")
            elif k / n < spiegelhalter(n, p0, tail):
                found.add(f"below-{name}")
    return found


def signalling(cases: list[tuple[Any, ...]], p0: dict[tuple[str, str], float], h: float,
               resolve_after: int) -> bool:  # fmt: skip
    """Steiner's risk-adjusted Bernoulli CUSUM, reset at each signal, for one site."""
    statistic, last_signal, position = 0.0, None, 0
    for *_, procedure, indication, leaking, assessed in cases:
        p = p0.get((procedure, indication))
        if p is None or assessed == 0:
            continue
        weight = leaking * math.log(ODDS_RATIO) - assessed * math.log(1 - p + ODDS_RATIO * p)
        statistic = max(0.0, statistic + weight)
        if statistic >= h:
            statistic, last_signal = 0.0, position
        position += 1
    return last_signal is not None and position - 1 - last_signal < resolve_after


# --- the tests ---------------------------------------------------------------------


def test_the_flagged_rows_are_those_an_independent_computation_flags(
    page: tuple[Any, list[str]], cohort_file: tuple[Path, list[dict[str, Any]]]
) -> None:
    tab, _ = page
    cases = leakage_cases(cohort_file[1])
    counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for _, _, site, procedure, indication, leaking, assessed in cases:
        counts[(site, procedure, indication)][0] += leaking
        counts[(site, procedure, indication)][1] += assessed
    rows = tab.locator(f'table.cohort-rows tr[data-row$="|{LEAKAGE}"]')
    assert rows.count() >= 8
    comparators: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    shown: dict[tuple[str, str, str], set[str]] = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        site, procedure, indication, _ = row.get_attribute("data-row").split("|")
        k, n = counts[(site, procedure, indication)]
        # Every leakage comparator of this cohort counts all imaged levels (none
        # states its modality), so the page counts what is counted here.
        assert (
            int(row.get_attribute("data-numerator")),
            int(row.get_attribute("data-denominator")),
        ) == (k, n), site
        p0 = float(row.get_attribute("data-p0")) if row.get_attribute("data-p0") else None
        text = row.get_attribute("data-range")
        bounds = (float(text.split(",")[0]), float(text.split(",")[1])) if text else None
        if p0 is not None:
            comparators[site][(procedure, indication)] = p0
        flags = set((row.get_attribute("data-flags") or "").split())
        assert flags - {"chart-signalling"} == expected_flags(k, n, p0, bounds), (
            site,
            procedure,
            indication,
        )
        shown[(site, procedure, indication)] = flags
        # The marks are text in the row, not colour alone.
        if flags:
            assert row.locator("td.marks abbr").count() == len(flags)
    # The drifting site is flagged, by the funnel and by its chart.
    assert any("above-95" in f for (s, *_), f in shown.items() if s == DRIFTING_SITE)
    resolve_after = Settings().drift_resolve_after_cases
    for site, strata in comparators.items():
        figure = tab.locator(f'figure.chart[data-site="{site}"][data-metric="{LEAKAGE}"]')
        h = float(figure.get_attribute("data-limit"))
        site_cases = [c for c in cases if c[2] == site]
        expected = signalling(site_cases, strata, h, resolve_after)
        for (s, procedure, indication), flags in shown.items():
            if (
                s == site
                and (procedure, indication) in strata
                and counts[(s, procedure, indication)][1]
            ):
                assert ("chart-signalling" in flags) is expected, (site, procedure, indication)
    riverside = tab.locator(f'figure.chart[data-site="{DRIFTING_SITE}"][data-metric="{LEAKAGE}"]')
    assert int(riverside.get_attribute("data-signals")) >= 1


def test_the_plots_rendered_with_their_marks(page: tuple[Any, list[str]], written: Written) -> None:
    tab, errors = page
    funnels = tab.locator("figure.funnel")
    assert funnels.count() == len(written.report.funnels) > 0
    for i in range(funnels.count()):
        figure = funnels.nth(i)
        fid = figure.get_attribute("id")
        points = tab.locator(f'[id^="{fid}-site-"]')
        assert points.count() == int(figure.get_attribute("data-sites")) >= 1
        for j in range(points.count()):
            box = points.nth(j).bounding_box()
            assert box is not None
            assert box["width"] > 0
            assert box["height"] > 0
        for line in (f"{fid}-upper-0", f"{fid}-upper-1", f"{fid}-lower-0"):
            assert tab.locator(f'[id="{line}"] path').count() == 1
    charts = tab.locator("figure.chart")
    assert charts.count() == len(written.report.charts) > 0
    for i in range(charts.count()):
        fid = charts.nth(i).get_attribute("id")
        for part in ("cusum", "limit"):
            mark = tab.locator(f'[id="{fid}-{part}"] path')
            assert mark.count() == 1, (fid, part)
            box = mark.bounding_box()
            assert box is not None, (fid, part)
            assert box["width"] > 0, (fid, part)
        signals = int(charts.nth(i).get_attribute("data-signals"))
        assert tab.locator(f'[id^="{fid}-signal-"]').count() == signals
        assert tab.locator(f'[id^="{fid}-change-"]').count() == signals
    assert tab.locator("figure figcaption").count() == funnels.count() + charts.count()
    assert errors == []
    SCREENSHOT.parent.mkdir(exist_ok=True)
    tab.screenshot(path=str(SCREENSHOT))


def test_the_report_holds_no_identifier_and_links_nowhere(
    written: Written, cohort_file: tuple[Path, list[dict[str, Any]]]
) -> None:
    html = written.html.read_text(encoding="utf-8")
    # No UUID of any kind (procedure, patient, event ids are all UUIDs).
    assert UUID.search(html) is None
    assert not any(e["procedure_id"] in html for e in cohort_file[1])
    # Self-contained: no script, no resource fetched from anywhere.
    assert "<script" not in html
    assert re.search(r'(src|href)="(https?:)?//', html) is None
    # Cited by author and seed number, never by catalog id or hashed seed file.
    assert "s000.leakage.per_level" not in html
    assert re.search(r"\d{3}_[0-9a-f]{16}\.txt", html) is None
    assert "Pain Physician 2012 (seed 000)" in html


def test_cli_writes_the_pdf_for_a_site_and_period(
    cohort_file: tuple[Path, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPINEWATCH_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "out"
    code = cli_main(["report", str(cohort_file[0]), "--out", str(out), "--pdf",
                     "--site", DRIFTING_SITE, "--from", "2025-03-01", "--to", "2025-10-31"])  # fmt: skip
    assert code == 0
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    assert len(pdf) > 20_000
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "oncology-central" not in html  # another site
    assert "2025-03-01 to 2025-10-31" in html


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--from", "03/01/2025"], "--from"),
        (["--from", "2025-05-01", "--to", "2025-04-01"], "--from"),
        (["--site", ""], "--site"),
    ],
)
def test_cli_names_the_bad_argument_never_its_value(
    args: list[str], named: str, cohort_file: tuple[Path, list[dict[str, Any]]],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert cli_main(["report", str(cohort_file[0]), *args]) == 2
    err = capsys.readouterr().err
    assert named in err
    assert "03/01/2025" not in err
