"""`spinewatch plan`: how fast would a chart catch a real deterioration at our volume?

A clinical lead names a metric, a cohort (procedure x indication), the
site's volume and the shift that matters (an odds ratio). The plan looks
up the literature baseline in the catalog, designs the Bernoulli CUSUM
whose false-alarm rate meets the target (ARL0, in cases or in months at
that volume), and reports the expected detection delay (ARL1), in cases
and in months.

The baseline is the comparator policy's point estimate for the cohort
(`baselines/comparators.toml`, `spinewatch baselines --policy`): a range
(e.g. complications 1-3% in osteoporotic collapse) is never charted, and a
cohort with no point estimate is refused with the policy's reason. A
baseline of zero (e.g. pulmonary cement embolism: none in the seeds' series)
cannot be charted: every such event is a sentinel, paged on occurrence.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any, TextIO

from spinewatch.baselines import load_catalog
from spinewatch.baselines.model import BaselineCatalog
from spinewatch.cli.plan_site import describe_site, design_site, read_metrics, site_inputs
from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.domain.drift.arl import ChartDesign, calibrate, shifted_probability
from spinewatch.domain.drift.budget import DEFAULT_ARL0_MONTHS, target_arl0_cases
from spinewatch.domain.drift.design import P0Basis, chart_probability, monitorable_metrics
from spinewatch.domain.drift.site_design import LEVELS_PER_PROCEDURE
from spinewatch.domain.outcomes.baseline_match import BaselineMatch, cite
from spinewatch.domain.outcomes.comparator_policy import resolve
from spinewatch.domain.outcomes.report_metrics import RateMetric
from spinewatch.errors import ChartDesignError


@dataclass(frozen=True, slots=True)
class ChartPlan:
    metric: RateMetric
    procedure: ProcedureType
    indication: Indication
    baseline: BaselineMatch
    p0: float
    p0_basis: P0Basis
    design: ChartDesign
    procedures_per_month: float

    @property
    def trials_per_month(self) -> float:
        per_procedure = LEVELS_PER_PROCEDURE if self.metric.unit == "treated_level" else 1.0
        return self.procedures_per_month * per_procedure

    @property
    def arl0_months(self) -> float:
        return self.design.arl0 / self.trials_per_month

    @property
    def arl1_months(self) -> float:
        return self.design.arl1 / self.trials_per_month

    def as_json(self) -> dict[str, Any]:
        source = self.baseline.source
        return {
            "metric": self.metric.name,
            "procedure": self.procedure.value,
            "indication": self.indication.value,
            "unit": self.metric.unit,
            "p0": self.p0,
            "p0_basis": self.p0_basis,
            "citation": {
                "baseline_id": self.baseline.entry_id,
                "described": self.baseline.described,
                "seed": source.seed,
                "locator": source.locator,
                "quote": source.quote,
                "exact_cohort": self.baseline.exact_cohort,
                "cite": cite(self.baseline),
            },
            "odds_ratio": self.design.odds_ratio,
            "h": self.design.limit,
            "arl0": self.design.arl0,
            "arl1": self.design.arl1,
            "arl0_months": self.arl0_months,
            "arl1_months": self.arl1_months,
            "volume_per_month": self.procedures_per_month,
            "trials_per_month": self.trials_per_month,
        }


def plan_chart(
    metric_name: str,
    procedure: ProcedureType,
    indication: Indication,
    *,
    procedures_per_month: float,
    odds_ratio: float,
    arl0_months: float | None = None,
    arl0_cases: float | None = None,
    catalog: BaselineCatalog | None = None,
) -> ChartPlan:
    if procedures_per_month <= 0:
        raise ChartDesignError(f"volume must be positive, got {procedures_per_month}/month")
    metric = monitorable_metrics().get(metric_name)
    if metric is None or metric.catalog_metric is None:
        raise ChartDesignError(
            f"no chart for {metric_name!r}; choose from: {', '.join(monitorable_metrics())}"
        )
    resolution = resolve(catalog or load_catalog(), metric, procedure, indication)
    match = resolution.match
    if match is None or resolution.status != "charted":
        raise ChartDesignError(
            f"no chartable comparator for {metric_name} in {procedure.value} / "
            f"{indication.value}: {resolution.reason}"
        )
    p0, basis = chart_probability(match)
    per_procedure = LEVELS_PER_PROCEDURE if metric.unit == "treated_level" else 1.0
    target = _target_arl0(arl0_months, arl0_cases, procedures_per_month * per_procedure)
    design = calibrate([(p0, 1.0)], odds_ratio, target)
    return ChartPlan(metric, procedure, indication, match, p0, basis, design, procedures_per_month)


def _target_arl0(months: float | None, cases: float | None, trials_per_month: float) -> float:
    if (months is None) == (cases is None):
        raise ChartDesignError("give the false-alarm target in months or in cases, not both")
    if cases is not None:
        return cases
    if months is None:
        raise ChartDesignError("give the false-alarm target in months or in cases")
    return target_arl0_cases(months, trials_per_month)


def describe(plan: ChartPlan) -> str:
    unit = "treated levels" if plan.metric.unit == "treated_level" else "patients"
    design = plan.design
    worse = "deterioration" if design.odds_ratio > 1 else "improvement"
    shifted = shifted_probability(plan.p0, design.odds_ratio)
    cohort = "" if plan.baseline.exact_cohort else " (a broader published group)"
    return "\n".join(
        [
            f"{plan.metric.name}, {plan.procedure.value} / {plan.indication.value}",
            f"  baseline p0 = {plan.p0:.1%} per {unit[:-1]} ({plan.p0_basis}): "
            f"{plan.baseline.entry_id}, {plan.baseline.described}{cohort}",
            f"    {cite(plan.baseline)}",
            f"  chart: risk-adjusted Bernoulli CUSUM for odds x{design.odds_ratio:g} "
            f"({worse}), h = {design.limit:.3f}",
            f"  false alarms: one every {design.arl0:,.0f} {unit} on average "
            f"= {plan.arl0_months:.1f} months at {plan.procedures_per_month:g} procedures/month",
            f"  detection: odds x{design.odds_ratio:g} (p = {shifted:.1%}) is signalled after "
            f"{design.arl1:,.0f} {unit} on average = {plan.arl1_months:.1f} months",
        ]
    )


def run_plan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`spinewatch plan`: 0 planned, 1 nothing to chart or no site, 2 usage."""
    try:
        if args.site is not None:
            return _plan_site(args, out)
        missing = [
            f"--{name}"
            for name in ("metric", "procedure", "indication", "volume")
            if getattr(args, name) is None
        ]
        if missing:
            print(
                f"spinewatch plan: give {', '.join(missing)} (or --site and --metrics-url "
                "to plan a live site's charts)",
                file=err,
            )
            return 2
        months = args.arl0_months
        if months is None and args.arl0_cases is None:
            months = DEFAULT_ARL0_MONTHS  # the worker's default budget
        plan = plan_chart(
            args.metric,
            ProcedureType(args.procedure),
            Indication(args.indication),
            procedures_per_month=args.volume,
            odds_ratio=args.shift if args.shift is not None else 2.0,
            arl0_months=months,
            arl0_cases=args.arl0_cases,
        )
    except ChartDesignError as exc:
        print(f"spinewatch plan: {exc}", file=err)
        return 1
    print(json.dumps(plan.as_json()) if args.json else describe(plan), file=out)
    return 0


def _plan_site(args: argparse.Namespace, out: TextIO) -> int:
    if args.metrics_url is None:
        raise ChartDesignError("--site needs --metrics-url, the worker's /metrics address")
    given = [f"--{n}" for n in ("procedure", "indication", "volume") if getattr(args, n)]
    if given or args.arl0_cases is not None:
        given += ["--arl0-cases"] if args.arl0_cases is not None else []
        raise ChartDesignError(
            f"--site plans the site's own volume and mix: drop {', '.join(given)}"
        )
    inputs = site_inputs(read_metrics(args.metrics_url), args.site)
    if args.metric is not None:
        inputs = [chart for chart in inputs if chart.metric == args.metric]
    if not inputs:
        raise ChartDesignError(
            f"{args.metrics_url} reports no designed chart for site {args.site!r}"
            + (f" and metric {args.metric}" if args.metric else "")
        )
    designs = design_site(inputs, arl0_months=args.arl0_months, shift=args.shift)
    if args.json:
        print(json.dumps({"site": args.site, "charts": [d.as_json() for d in designs]}), file=out)
    else:
        print(describe_site(args.site, designs), file=out)
    return 0
