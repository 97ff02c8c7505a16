"""Who is paged for what: the one severity table of spinewatch alerts.

Severity follows the metric, not the size of the excess. Events the seeds'
series report none of (pulmonary cement embolism, a procedure-related
death, a new neurological deficit) are critical at the first occurrence:
they are sentinels, paged on every case whatever any chart says. Drift in
the other outcomes (leakage, complications, pain relief) is a warning for
the quality team, to be looked at within the working day.

`deploy/prometheus/rules.yml` uses the same table; a test checks that the
two agree.
"""

from __future__ import annotations

from typing import Literal

Severity = Literal["critical", "warning"]

# Metrics whose every new case pages (the seeds' series report none).
SENTINEL_METRICS: tuple[str, ...] = (
    "pulmonary_cement_embolism_rate",
    "death_rate",
    "neurological_deficit_rate",
)

SEVERITY_BY_METRIC: dict[str, Severity] = {
    **dict.fromkeys(SENTINEL_METRICS, "critical"),
    "cement_leakage_rate_per_level": "warning",
    "symptomatic_cement_leakage_rate": "warning",
    "complication_rate": "warning",
    "radiculopathy_rate": "warning",
    "reoperation_rate": "warning",
    "vas_change_post_procedure": "warning",
    "vas_change_final": "warning",
    # A site missing follow-ups: its outcome figures lose their meaning.
    "followup_completeness": "warning",
}


def severity_of(metric: str) -> Severity:
    """Critical for sentinel metrics; warning for every other drift."""
    return SEVERITY_BY_METRIC.get(metric, "warning")
