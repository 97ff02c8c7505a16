"""`spinewatch plan --site`: the designs of a live site's charts, from the worker's inputs.

The worker publishes each chart's design inputs on /metrics (volume a
month, stratum shares, budget in months, the shift, whether provisional).
This reads them and designs each chart with the worker's own functions
(`site_design.rate_plan` / `vas_plan`, then `compute_design`): the h,
ARL0 and ARL1 printed are the worker's, or, with `--arl0-months` or
`--shift`, what they would be with that budget or shift at the same mix.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from spinewatch.baselines import load_catalog
from spinewatch.baselines.model import BaselineCatalog
from spinewatch.domain.drift.arl import ChartDesign
from spinewatch.domain.drift.design import chartable_strata, monitorable_metrics
from spinewatch.domain.drift.site_design import (
    AnyDesign,
    Shares,
    SiteChartPlan,
    compute_design,
    rate_plan,
    vas_plan,
)
from spinewatch.errors import ChartDesignError

_INPUTS = {
    "spinewatch_drift_design_volume_per_month": "volume",
    "spinewatch_drift_design_budget_months": "budget",
    "spinewatch_drift_design_odds_ratio": "odds_ratio",
    "spinewatch_drift_design_shift_sd": "shift_sd",
    "spinewatch_drift_design_provisional": "provisional",
}


@dataclass
class ChartInputs:
    """One chart's design inputs as the worker reports them."""

    metric: str
    direction: str
    values: dict[str, float] = field(default_factory=dict)
    shares: dict[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SiteChartDesign:
    metric: str
    direction: str
    plan: SiteChartPlan
    design: AnyDesign

    def as_json(self) -> dict[str, Any]:
        design, volume = self.design, self.plan.volume_per_month
        shift = design.odds_ratio if isinstance(design, ChartDesign) else design.shift_sd
        return {
            "metric": self.metric,
            "direction": self.direction,
            "provisional": self.plan.provisional,
            "volume_per_month": volume,
            "budget_months": self.plan.arl0_months,
            "mix": [
                {"procedure": p, "indication": i, "share": share}
                for (p, i), share in self.plan.shares
            ],
            "shift": shift,
            "h": design.limit,
            "arl0_cases": design.arl0,
            "arl1_cases": design.arl1,
            "arl0_months": design.arl0 / volume,
            "arl1_months": design.arl1 / volume,
        }


def read_metrics(url: str, timeout_s: float = 10.0) -> str:
    """The worker's /metrics text; `url` is its base or the /metrics address."""
    address = url if url.rstrip("/").endswith("/metrics") else url.rstrip("/") + "/metrics"
    if not address.startswith(("http://", "https://")):
        raise ChartDesignError(f"--metrics-url must be http(s)://host:port, got {url!r}")
    try:
        with urllib.request.urlopen(address, timeout=timeout_s) as response:  # noqa: S310
            text: str = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise ChartDesignError(f"cannot read {address}: {exc}") from None
    return text


def site_inputs(text: str, site: str) -> list[ChartInputs]:
    """Each chart of `site` with design inputs in the exposition text."""
    charts: dict[tuple[str, str], ChartInputs] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            drift = sample.name.startswith("spinewatch_drift_design_")
            if not drift or labels.get("site") != site or "direction" not in labels:
                continue
            key = (labels["metric"], labels["direction"])
            name = _INPUTS.get(sample.name)
            if sample.name == "spinewatch_drift_design_stratum_share":
                chart = charts.setdefault(key, ChartInputs(*key))
                chart.shares[(labels["procedure"], labels["indication"])] = sample.value
            elif name is not None:
                charts.setdefault(key, ChartInputs(*key)).values[name] = sample.value
    return [c for _, c in sorted(charts.items()) if "volume" in c.values]


def design_site(
    inputs: list[ChartInputs],
    *,
    arl0_months: float | None = None,
    shift: float | None = None,
    catalog: BaselineCatalog | None = None,
) -> list[SiteChartDesign]:
    """Each chart's design from the reported inputs, with the worker's functions."""
    catalog = catalog or load_catalog()
    metrics = monitorable_metrics()
    designs = []
    for chart in inputs:
        values = chart.values
        months = arl0_months if arl0_months is not None else values["budget"]
        provisional = values.get("provisional", 0.0) == 1.0
        volume = values["volume"]
        if "shift_sd" in values:
            # --shift is an odds ratio: the VAS charts keep the worker's shift in SD.
            plan = vas_plan(values["shift_sd"], months, volume, provisional=provisional)
        else:
            metric = metrics.get(chart.metric)
            if metric is None:
                raise ChartDesignError(f"the worker charts {chart.metric}, unknown here")
            odds_ratio = shift if shift is not None else values["odds_ratio"]
            shares: Shares = tuple(sorted(chart.shares.items()))
            strata = chartable_strata(catalog, metric)
            plan = rate_plan(strata, odds_ratio, months, volume, shares, provisional=provisional)
        designs.append(
            SiteChartDesign(chart.metric, chart.direction, plan, compute_design(plan.key))
        )
    return designs


def describe_site(site: str, designs: list[SiteChartDesign]) -> str:
    lines = [f"site {site}: {len(designs)} charts designed for its own volume and case mix"]
    per_year = 0.0
    for item in designs:
        data = item.as_json()
        per_year += 12.0 / data["arl0_months"]
        mix = ", ".join(f"{m['procedure']}/{m['indication']} {m['share']:.2f}" for m in data["mix"])
        kind = " (provisional: too little history; per stratum)" if data["provisional"] else ""
        lines += [
            f"{item.metric}:{item.direction}{kind}",
            f"  designed for {data['volume_per_month']:g} cases/month"
            + (f", mix {mix}" if mix else "")
            + f", budget {data['budget_months']:g} months, shift x{data['shift']:g}",
            f"  h = {data['h']:.3f}; false alarm every {data['arl0_cases']:,.0f} cases "
            f"= {data['arl0_months']:.1f} months; detection after {data['arl1_cases']:,.0f} "
            f"cases = {data['arl1_months']:.1f} months",
        ]
    lines.append(f"expected false alarms a year across these charts: {per_year:.2f}")
    return "\n".join(lines)
