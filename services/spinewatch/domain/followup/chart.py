"""The follow-up completeness chart: is a site missing more follow-ups than it should?

One chart per site, on the same calibrated machinery as the outcome
charts: a Bernoulli CUSUM (`drift/cusum.py`) whose cases are the site's
scheduled follow-ups in the order their window and grace close, each case
adverse when the follow-up is missing then (overdue or lost). A follow-up
received late turns its case back to "received": the chart is refolded
from that case, as for a complication reported late, so a site that
catches up clears its statistic.

The target. The seeds give no completeness figure, so the chart tests
against a local setting, the expected completeness (default 0.80: spine
registries report 25-30% non-response at one year, and the early visits
the demo schedules are easier to keep), p0 = 1 - expected, and detects
the odds of a missing follow-up multiplied by the configured ratio
(default 2: at 0.80 expected, 33% missing).

The limit is designed exactly (Markov chain, `drift/arl.py`) for the
false-alarm budget in months (`drift/budget.py`) at the site's own volume
of closed follow-ups per month. The volume is rounded to a half power of
two (steps of 41%, so within +-19% of the observed one): a site's chart is
re-designed, and refolded from its first case, only when its volume moves
out of its step, and every design is cached. No chart is designed before a
site has a month of closed follow-ups to measure its volume from.

Pure: no I/O.
"""

from __future__ import annotations

import math
from functools import lru_cache

from spinewatch.domain.drift.budget import DAYS_PER_MONTH, target_arl0_cases
from spinewatch.domain.drift.design import MonitoredChart, design_for
from spinewatch.domain.outcomes.report_metrics import RateMetric

METRIC = "followup_completeness"
EXPECTED_SETTING = "SPINEWATCH_FOLLOWUP_EXPECTED_COMPLETENESS"
# Every scheduled follow-up weighs the same (no literature strata): one key.
STRATUM = ("followup", "scheduled")
MISSED = (1, 1)
RECEIVED = (0, 1)
MIN_HISTORY_DAYS = DAYS_PER_MONTH

_MISSING = RateMetric(METRIC, "followups_missing", "followups_closed", "patient", None, None)


def volume_step(cases_per_month: float) -> float:
    """The volume a chart is designed for: rounded to a half power of two."""
    return float(2.0 ** (round(2.0 * math.log2(cases_per_month)) / 2.0))


@lru_cache(maxsize=128)
def completeness_chart(
    expected_completeness: float, odds_ratio: float, arl0_months: float, cases_per_month: float
) -> MonitoredChart:
    """The chart for a site closing `cases_per_month` scheduled follow-ups a month."""
    p0 = 1.0 - expected_completeness
    arl0 = max(target_arl0_cases(arl0_months, cases_per_month), 2.0)
    design = design_for(p0, odds_ratio, arl0)
    log_ratio = math.log(odds_ratio)
    penalty = math.log(1.0 - p0 + odds_ratio * p0)
    # No literature strata: the weights say how a case is weighed, and the
    # drift message names the local target instead of a citation.
    return MonitoredChart(
        _MISSING,
        design,
        strata={},
        run_lengths={},
        weights={STRATUM: (log_ratio, penalty, p0)},
    )
