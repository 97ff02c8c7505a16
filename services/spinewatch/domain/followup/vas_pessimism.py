"""Whether a VAS alarm holds when lost follow-ups count as no relief (see `pessimistic`).

Kept apart from `pessimistic`, which the report's metric table imports:
this one reads the drift charts, which import that table. Pure: no I/O.
"""

from __future__ import annotations

from spinewatch.domain.drift.design import Outcome, Stratum
from spinewatch.domain.drift.vas_drift import MonitoredVasChart


def pessimistic_vas(
    chart: MonitoredVasChart, window: list[tuple[Stratum, Outcome]], lost: list[Stratum]
) -> tuple[float | None, bool | None]:
    """A VAS signal's window under the pessimistic assumption.

    Returns the mean change with every lost follow-up of the window's
    procedures counted as change 0, and whether the shortfall still holds:
    the mean standardised change, lost ones included, reaches the chart's
    reference value k (half the designed shift), the level above which the
    CUSUM drifts upwards. A lost patient adds no relief, so an alarm that
    holds under complete-case analysis practically always holds here too;
    the mean says by how much the picture worsens.
    """
    cases = [(s, float(o)) for s, o in window if isinstance(o, float)]
    cases += [(s, 0.0) for s in lost]
    if not cases:
        return None, None
    mean_change = sum(change for _, change in cases) / len(cases)
    z = [
        (change - chart.strata[s].mean_change) / chart.strata[s].sd_change
        for s, change in cases
        if s in chart.strata
    ]
    holds = bool(z) and sum(z) / len(z) >= chart.design.reference
    return mean_change, holds
