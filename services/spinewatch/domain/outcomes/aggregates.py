"""Cohort aggregates: sums of contributions, and the rates read from them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from spinewatch.contracts import Indication, ProcedureType
from spinewatch.domain.outcomes.contribution import (
    VAS_SCALE,
    AggregateKey,
    Contribution,
    Tally,
    vas_moments,
)


def add_into(total: Tally, part: Mapping[str, int], sign: int = 1) -> None:
    """total += sign * part, dropping names that fall back to zero."""
    for name, value in part.items():
        updated = total.get(name, 0) + sign * value
        if updated:
            total[name] = updated
        else:
            total.pop(name, None)


def replace_contribution(
    totals: dict[AggregateKey, Tally], old: Contribution | None, new: Contribution | None
) -> None:
    """Move a procedure's contribution from its old cohort state to its new one."""
    if old is not None and new is not None and old.key == new.key:
        _add_difference(totals[new.key], new.tally, old.tally)
        return
    if old is not None:
        add_into(totals.setdefault(old.key, {}), old.tally, sign=-1)
        if not totals[old.key]:
            del totals[old.key]
    if new is not None:
        add_into(totals.setdefault(new.key, {}), new.tally)


def _add_difference(total: Tally, new: Mapping[str, int], old: Mapping[str, int]) -> None:
    """total += new - old, in one pass over each side.

    The usual update (a follow-up joins its procedure) changes a few of
    ~30 tallies: unchanged ones are read, not written.
    """
    old_get = old.get
    for name, value in new.items():
        delta = value - old_get(name, 0)
        if delta:
            updated = total.get(name, 0) + delta
            if updated:
                total[name] = updated
            else:
                del total[name]
    for name, value in old.items():
        # A tally may hold a name at 0 (e.g. "same or more analgesics: no"),
        # which the totals do not keep (add_into drops zero sums): a name
        # leaving the contribution at 0 changes nothing.
        if value and name not in new:
            updated = total.get(name, 0) - value
            if updated:
                total[name] = updated
            else:
                del total[name]


@dataclass(frozen=True, slots=True)
class MeanSd:
    n: int
    mean: float
    sd: float | None  # None below two observations


def mean_sd(tally: Mapping[str, int], series: str) -> MeanSd | None:
    n_name, sum_name, squares_name = vas_moments(series)
    n = tally.get(n_name, 0)
    if n == 0:
        return None
    total, squares = tally.get(sum_name, 0), tally.get(squares_name, 0)
    mean = total / n / VAS_SCALE
    if n < 2:
        return MeanSd(n, mean, None)
    # Integer arithmetic up to the final division: no cancellation error.
    variance = (n * squares - total * total) / (n * (n - 1)) / VAS_SCALE**2
    return MeanSd(n, mean, math.sqrt(max(variance, 0.0)))


@dataclass(frozen=True, slots=True)
class Rate:
    numerator: int
    denominator: int
    low: float  # 95% Wilson score interval
    high: float

    @property
    def value(self) -> float:
        return self.numerator / self.denominator


def wilson_rate(numerator: int, denominator: int, z: float = 1.959963984540054) -> Rate | None:
    """Proportion with its Wilson score interval (good at small n and at 0 or 1)."""
    if denominator <= 0:
        return None
    p = numerator / denominator
    z2 = z * z
    centre = (p + z2 / (2 * denominator)) / (1 + z2 / denominator)
    half = (
        z
        * math.sqrt(p * (1 - p) / denominator + z2 / (4 * denominator * denominator))
        / (1 + z2 / denominator)
    )
    return Rate(numerator, denominator, max(0.0, centre - half), min(1.0, centre + half))


ALL = "all"  # a roll-up over every site, or over every operator


@dataclass(frozen=True, slots=True, order=True)
class CohortView:
    """One line of the report: a site (or all sites), a procedure, an
    indication, and an operator (or all operators)."""

    site_id: str
    procedure_type: ProcedureType
    indication: Indication
    operator_ref: str


def cohort_views(totals: Mapping[AggregateKey, Tally]) -> dict[CohortView, Tally]:
    """Site cohorts, their all-sites roll-up, and per-operator cohorts."""
    views: dict[CohortView, Tally] = {}
    for (cohort, operator), tally in totals.items():
        procedure, indication = cohort.procedure_type, cohort.indication
        targets = [
            CohortView(cohort.site_id, procedure, indication, ALL),
            CohortView(ALL, procedure, indication, ALL),
        ]
        if operator is not None:
            targets.append(CohortView(cohort.site_id, procedure, indication, operator))
        for view in targets:
            add_into(views.setdefault(view, {}), tally)
    return views
