"""End-to-end: a live site's charts are designed for its own mix, and `plan --site` agrees.

A two-stratum site (PVP for hemangioma and for metastasis) is streamed
into a real worker. Its charts must be designed on the mixture of its
strata at 60 months per false alarm at its own volume (not provisional),
the redesign recorded on the drift topic, and `spinewatch plan --site`,
run as a separate process that reads the worker's /metrics and
recalibrates from scratch, must print the same h, ARL0 and ARL1, in cases
and in months, as the worker's /metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from spinewatch.contracts import Indication, ProcedureType
from spinewatch.contracts.drift import DriftRedesigned
from spinewatch.demo.synthetic.cohort import SiteProfile, generate_cohort
from tests.conftest import SettingsFactory
from tests.support import Sample, consume, produce, running_worker, scrape_async, value, wait_until

pytestmark = pytest.mark.e2e

SITE = "mixed"
MIX = {
    (ProcedureType.PVP, Indication.HEMANGIOMA): 0.6,
    (ProcedureType.PVP, Indication.METASTASIS): 0.4,
}
# Two metrics the comparator policy charts in both strata (per-level leakage
# has a point estimate for PVP/hemangioma only: schemas/baselines/COMPARATORS.md).
METRICS = ("complication_rate", "symptomatic_cement_leakage_rate")


def _designed(samples: dict[Sample, float]) -> dict[tuple[str, str], dict[str, float]]:
    """Per chart of the site: its design gauges."""
    charts: dict[tuple[str, str], dict[str, float]] = {}
    for (name, label_set), number in samples.items():
        labels = dict(label_set)
        if (
            labels.get("site") == SITE
            and name.startswith("spinewatch_drift_")
            and "metric" in labels
            and "procedure" not in labels
        ):
            chart = charts.setdefault((labels["metric"], labels["direction"]), {})
            chart[name.removeprefix("spinewatch_drift_")] = number
    # Charts designed for the site's volume and mix (what `plan --site` reads);
    # the follow-up completeness chart has its own rule (domain/followup/chart.py).
    return {key: chart for key, chart in charts.items() if "design_volume_per_month" in chart}


def _settled(samples: dict[Sample, float]) -> bool:
    charts = _designed(samples)
    return len(charts) == len(METRICS) + 1 and all(
        chart.get("design_provisional") == 0 for chart in charts.values()
    )


async def _plan_site(url: str, tmp_path: Path) -> dict[str, Any]:
    """`spinewatch plan --site` in a process of its own (its own caches: none)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spinewatch", "plan", "--site", SITE, "--metrics-url", url, "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
        cwd=tmp_path,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def test_plan_site_gives_the_workers_own_design_for_a_two_stratum_site(
    make_settings: SettingsFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    cohort = generate_cohort(11, [SiteProfile(SITE, 480, MIX)])
    settings = make_settings(
        drift_interval_s=0.2,
        drift_metrics=METRICS,
        drift_vas_timepoints=("post_procedure",),
        data_dir=tmp_path / "data",  # a cold design cache: the worker calibrates
    )
    async with running_worker(settings, kafka_bootstrap) as worker:
        await produce(kafka_bootstrap, settings.events_topic, cohort.deliveries)
        url = f"{worker.metrics.url}/metrics"

        async def scrape() -> dict[Sample, float]:
            return await scrape_async(url)

        await wait_until(scrape, _settled, 180, "the site's own designs")
        # Designs move with the streamed history: compare once two scrapes agree.
        before: dict[tuple[str, str], dict[str, float]] = {}

        async def stable() -> dict[Sample, float]:
            nonlocal before
            samples = await scrape()
            now = {
                k: {n: v for n, v in c.items() if n != "chart_statistic"}
                for k, c in _designed(samples).items()
            }
            same, before = now == before, now
            return samples if same else {}

        scraped = await wait_until(stable, _settled, 120, "designs that no longer change")
        planned = await _plan_site(url, tmp_path)
        records = await consume(kafka_bootstrap, settings.drift_topic, 1, timeout_s=5)

    charts = {(c["metric"], c["direction"]): c for c in planned["charts"]}
    assert set(charts) == set(_designed(scraped))
    for (metric, direction), chart in charts.items():
        labels = {"site": SITE, "metric": metric, "direction": direction}
        assert not chart["provisional"]
        assert chart["h"] == pytest.approx(
            value(scraped, "spinewatch_drift_chart_limit", **labels), rel=1e-12
        )
        for figure in ("arl0_cases", "arl1_cases", "arl0_months", "arl1_months"):
            got = value(scraped, f"spinewatch_drift_chart_{figure}", **labels)
            assert chart[figure] == pytest.approx(got, rel=1e-12), (metric, figure)
        # The budget: 60 months per false alarm at the site's own volume.
        assert 60.0 <= chart["arl0_months"] < 60.0 * 1.1
        if metric in METRICS:
            # Both strata of the site, at their shares (to 0.05).
            mix = {(m["procedure"], m["indication"]): m["share"] for m in chart["mix"]}
            assert set(mix) == {("pvp", "hemangioma"), ("pvp", "metastasis")}
            assert mix[("pvp", "hemangioma")] == pytest.approx(0.6, abs=0.1)
            for (procedure, indication), share in mix.items():
                assert share == value(
                    scraped, "spinewatch_drift_design_stratum_share",
                    procedure=procedure, indication=indication, **labels,
                )  # fmt: skip

    # Each design change is on the drift topic, for the record: the site's
    # current design among them, with its volume and mix.
    redesigns = [
        DriftRedesigned.model_validate_json(r.value)
        for r in records
        if r.value is not None and json.loads(r.value)["event_type"] == "drift.redesigned"
    ]
    complication = charts[("complication_rate", "worse")]
    assert any(
        r.site_id == SITE
        and r.metric == "complication_rate"
        and r.limit == complication["h"]
        and not r.provisional
        and len(r.mix) == 2
        for r in redesigns
    ), redesigns
