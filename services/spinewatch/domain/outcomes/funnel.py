"""Cross-sectional checks beside the sequential charts: exact p-values and funnel limits.

A CUSUM answers "has something changed recently?"; a funnel plot answers
"is this site's cumulative rate unusual for its volume?" (Spiegelhalter,
"Funnel plots for comparing institutional performance", Stat Med 2005).
Both compare with the same catalog baseline.

Limits are exact binomial quantiles with Spiegelhalter's interpolation, so
they are smooth in the denominator instead of stepping with the integer
quantile; an optional overdispersion factor (estimated from the sites'
winsorised z-scores) widens them when sites differ more than chance allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from spinewatch.errors import ChartDesignError

# numpy and SciPy are imported by the functions that need them: the worker
# imports this module at start-up, and importing SciPy cost ~1 s of it; the
# first funnel computed (by the metrics renderer, after start-up) pays it.

# Two-sided coverages drawn on a funnel plot: ~2 and ~3 standard deviations.
FUNNEL_COVERAGES = (0.95, 0.998)


def exceedance_p_value(events: int, trials: int, p0: float) -> float:
    """P(X >= events) for X ~ Binomial(trials, p0): one-sided, exact."""
    from scipy import stats  # noqa: PLC0415

    _check(trials, p0)
    if not 0 <= events <= trials:
        raise ChartDesignError(f"events ({events}) must lie in 0..trials ({trials})")
    return float(stats.binom.sf(events - 1, trials, p0))


def binomial_limit(trials: int, p0: float, tail: float) -> float:
    """The proportion below which a share `tail` of Binomial(trials, p0)/trials falls.

    Spiegelhalter's interpolation between the integer quantile r and r - 1:
    (r - a) / n with a = (F(r) - tail) / (F(r) - F(r - 1)).
    """
    from scipy import stats  # noqa: PLC0415

    _check(trials, p0)
    if not 0.0 < tail < 1.0:
        raise ChartDesignError(f"tail probability must lie in (0, 1), got {tail}")
    r = float(stats.binom.ppf(tail, trials, p0))
    at_r = float(stats.binom.cdf(r, trials, p0))
    below_r = float(stats.binom.cdf(r - 1, trials, p0))
    step = at_r - below_r
    a = (at_r - tail) / step if step > 0 else 0.0
    return max(0.0, (r - a) / trials)


@dataclass(frozen=True, slots=True)
class FunnelLimits:
    coverage: float  # e.g. 0.95
    low: float
    high: float


def funnel_limits(
    trials: int,
    p0: float,
    coverages: Sequence[float] = FUNNEL_COVERAGES,
    overdispersion: float = 1.0,
) -> list[FunnelLimits]:
    """Control limits for a unit with `trials` cases against the target p0.

    With `overdispersion` phi > 1 the limits are the normal approximation
    widened by sqrt(phi) (Spiegelhalter 2005, section 3.2); otherwise exact.
    """
    from scipy import stats  # noqa: PLC0415

    limits = []
    for coverage in coverages:
        tail = (1.0 - coverage) / 2.0
        if overdispersion > 1.0:
            z = float(stats.norm.ppf(1.0 - tail))
            half = z * math.sqrt(overdispersion * p0 * (1.0 - p0) / trials)
            limits.append(FunnelLimits(coverage, max(0.0, p0 - half), min(1.0, p0 + half)))
        else:
            low = binomial_limit(trials, p0, tail)
            high = binomial_limit(trials, p0, 1.0 - tail)
            limits.append(FunnelLimits(coverage, low, high))
    return limits


def overdispersion_factor(
    events: Sequence[int], trials: Sequence[int], p0: float, winsor: float = 0.1
) -> float:
    """phi from the units' winsorised z-scores; 1.0 when they show no excess spread.

    phi is only returned above 1 when the spread is significant: I * phi
    exceeds I - 1 + 2 * sqrt(2 (I - 1)), Spiegelhalter's rough test.
    """
    import numpy as np  # noqa: PLC0415

    if len(events) != len(trials) or len(events) < 2:
        raise ChartDesignError("overdispersion needs two or more units with trials")
    for n in trials:
        _check(n, p0)
    observed = np.asarray(events, dtype=float) / np.asarray(trials, dtype=float)
    z = (observed - p0) / np.sqrt(p0 * (1.0 - p0) / np.asarray(trials, dtype=float))
    low, high = np.quantile(z, [winsor, 1.0 - winsor])
    z = np.clip(z, low, high)
    units = len(z)
    phi = float(np.mean(z**2))
    if units * phi > (units - 1) + 2.0 * math.sqrt(2.0 * (units - 1)):
        return phi
    return 1.0


def _check(trials: int, p0: float) -> None:
    if trials <= 0:
        raise ChartDesignError(f"trials must be positive, got {trials}")
    if not 0.0 < p0 < 1.0:
        raise ChartDesignError(f"target proportion must lie in (0, 1), got {p0}")
