"""The arguments of `spinewatch plan`, as a clinician would type them.

Values are case-insensitive (`--procedure PVP`), `--help` lists every
valid metric, procedure and indication, and a volume needs its unit
(`12/month`, `150/year`, `3/week`): a bare `5` is refused rather than
read as one unit or another, and `-3/month` is refused as a volume, not
misread by argparse as an option. No SciPy here: `--help` stays quick.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.domain.drift.budget import DEFAULT_ARL0_MONTHS
from spinewatch.domain.outcomes.report_metrics import RATE_METRICS

# Options taking a number that may be typed negative (then refused with a
# reason): argparse would take "-3/month" for an option and answer
# "expected one argument".
NUMERIC_OPTIONS = ("--volume", "--shift", "--arl0-months", "--arl0-cases")
_PER = {"week": 365.25 / 12 / 7, "month": 1.0, "year": 1.0 / 12}
_VOLUME = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*(?:/\s*([a-z]+))?\s*$", re.IGNORECASE)
_NEGATIVE = re.compile(r"^-(\d|\.\d)")


def attach_negative_values(argv: Sequence[str]) -> list[str]:
    """`--volume -3/month` -> `--volume=-3/month`, so the value reaches its check."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] in NUMERIC_OPTIONS and _NEGATIVE.match(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def per_month(text: str) -> float:
    """A volume with its unit, as procedures a month."""
    match = _VOLUME.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a volume: give a number and a unit, e.g. 5/month or 60/year"
        )
    number, unit = float(match.group(1)), match.group(2)
    if unit is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no unit: give a unit, e.g. {number:g}/month or {number * 12:g}/year"
        )
    factor = _PER.get(unit.lower().removesuffix("s"))
    if factor is None:
        raise argparse.ArgumentTypeError(
            f"unknown unit {unit!r} in {text!r}: use /week, /month or /year"
        )
    if number <= 0:
        raise argparse.ArgumentTypeError(
            f"volume must be positive, got {text!r}: procedures a month, e.g. 5/month"
        )
    return number * factor


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def odds_ratio(text: str) -> float:
    value = positive(text)
    if value == 1:
        raise argparse.ArgumentTypeError("an odds ratio of 1 is no shift: e.g. 2 (worse), 0.5")
    return value


def chartable_rate_names() -> list[str]:
    return [m.name for m in RATE_METRICS if m.catalog_metric is not None]


def add_plan_parser(commands: Any) -> argparse.ArgumentParser:
    metrics = chartable_rate_names()
    procedures = [p.value for p in ProcedureType if p.is_vertebral_augmentation]
    indications = [i.value for i in Indication]
    plan: argparse.ArgumentParser = commands.add_parser(
        "plan",
        help="design a drift chart for a cohort and volume, or show a live site's designs",
        description="How fast would a chart catch a real deterioration at this volume? "
        "Either a cohort (--metric, --procedure, --indication, --volume) or a live "
        "site's charts (--site, --metrics-url). Values are case-insensitive.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="metrics:\n  "
        + "\n  ".join(metrics)
        + f"\nprocedures: {', '.join(procedures)}\nindications: {', '.join(indications)}",
    )
    plan.add_argument(
        "--metric", type=str.lower, choices=metrics, metavar="METRIC", help="see the list below"
    )
    plan.add_argument(
        "--procedure",
        type=str.lower,
        choices=procedures,
        metavar="PROCEDURE",
        help=f"one of: {', '.join(procedures)}",
    )
    plan.add_argument(
        "--indication",
        type=str.lower,
        choices=indications,
        metavar="INDICATION",
        help=f"one of: {', '.join(indications)}",
    )
    plan.add_argument(
        "--volume", type=per_month, help="procedures with a unit: 12/month, 150/year, 3/week"
    )
    plan.add_argument(
        "--shift", type=odds_ratio, default=None, help="odds ratio to detect (default 2)"
    )
    target = plan.add_mutually_exclusive_group()
    target.add_argument(
        "--arl0-months",
        type=positive,
        default=None,
        help=f"months between false alarms per chart (default {DEFAULT_ARL0_MONTHS:g}, "
        "the worker's default; with --site, the site's budget)",
    )
    target.add_argument("--arl0-cases", type=positive, default=None, help="or in cases")
    plan.add_argument("--site", help="a live site: plan its charts at its own volume and mix")
    plan.add_argument(
        "--metrics-url", help="with --site: the worker's /metrics, e.g. http://worker:9108"
    )
    plan.add_argument("--json", action="store_true", help="JSON")
    return plan
