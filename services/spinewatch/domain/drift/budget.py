"""The false-alarm budget of a chart, in time at a site's own volume.

A target in cases means different things at different sites: 10,000 cases
is a false alarm every 14 years at 60 procedures a month and every 167
years at 5. Clinical leads budget alarms in time ("how often will this
page us for nothing?"), so the worker and `spinewatch plan` both take the
in-control average run length in months and turn it into cases at the
volume the chart sees.

Default 60 months per chart: a site runs about ten charts (six rate
metrics, two VAS timepoints, follow-up completeness), so 60 months each is
about two false alarms a year for the whole site, which a monthly quality
meeting can look into; 36 months each (plan's old default) would be more
than three a year.

Pure: no I/O.
"""

from __future__ import annotations

from spinewatch.errors import ChartDesignError

DEFAULT_ARL0_MONTHS = 60.0
DAYS_PER_MONTH = 365.25 / 12


def target_arl0_cases(arl0_months: float, cases_per_month: float) -> float:
    """The in-control run length in cases that lasts `arl0_months` at this volume."""
    if arl0_months <= 0:
        raise ChartDesignError(f"the false-alarm budget must be positive, got {arl0_months} months")
    if cases_per_month <= 0:
        raise ChartDesignError(f"volume must be positive, got {cases_per_month} cases/month")
    return arl0_months * cases_per_month


def false_alarms_per_year(arl0_months: float) -> float:
    """Expected false alarms a year of one chart whose ARL0 lasts `arl0_months`."""
    return 12.0 / arl0_months
