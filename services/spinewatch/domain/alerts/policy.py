"""Who is paged for what: the one severity table of spinewatch alerts.

Severity follows the metric, not the size of the excess. Pulmonary cement
embolism, a procedure-related death and a new neurological deficit are
catastrophic: they are sentinels, critical at the first occurrence and
paged on every case whatever any chart says. The seeds do not report them as
never seen: seed 000 saw no pulmonary embolism in 26 patients
(`s000.pulmonary_embolism`, 0/26), but Weill 1996 reports 2 deaths in 37
patients with metastases (`s003.table1.weill.death`, 2/37) and Kaemmerlen
1989 one compressive myelopathy in 20 (`s003.table1.kaemmerlen.myelopathy`,
1/20), both in seed 003's Table I. Where a rate is published, the drift
chart watches it too. Drift in the other outcomes (leakage, complications,
pain relief) is a warning for the quality team, to be looked at within the
working day.

`deploy/prometheus/rules.yml` uses the same table; a test checks that the
two agree.
"""

from __future__ import annotations

from typing import Literal

Severity = Literal["critical", "warning"]

# Metrics whose every new case pages: catastrophic events (the figures the
# seeds give for them are in the docstring above and README's severity table).
SENTINEL_METRICS: tuple[str, ...] = (
    "pulmonary_cement_embolism_rate",
    "death_rate",
    "neurological_deficit_rate",
)

# What the seeds report of each sentinel, for the page (tests/test_severity_table.py
# checks every id and figure against the catalog).
SENTINEL_SEED_FIGURES: dict[str, str] = {
    "pulmonary_cement_embolism_rate": (
        "seeds: none in seed 000's 26 patients (s000.pulmonary_embolism, 0/26)"
    ),
    "death_rate": "seeds: Weill 1996, 2 of 37 in metastases (s003.table1.weill.death, 2/37)",
    "neurological_deficit_rate": (
        "seeds: Kaemmerlen 1989, 1 of 20 in metastases (s003.table1.kaemmerlen.myelopathy, 1/20)"
    ),
}

SEVERITY_BY_METRIC: dict[str, Severity] = {
    **dict.fromkeys(SENTINEL_METRICS, "critical"),
    "cement_leakage_rate_per_level": "warning",
    "cement_leakage_rate_per_patient": "warning",
    "symptomatic_cement_leakage_rate": "warning",
    "complication_rate": "warning",
    "radiculopathy_rate": "warning",
    "reoperation_rate": "warning",
    "vas_change_post_procedure": "warning",
    "vas_change_final": "warning",
    # A site whose events stopped (domain/drift/silence.py): data, not harm.
    "stream_silence": "warning",
    # A site missing follow-ups: its outcome figures lose their meaning.
    "followup_completeness": "warning",
}


def severity_of(metric: str) -> Severity:
    """Critical for sentinel metrics; warning for every other drift."""
    return SEVERITY_BY_METRIC.get(metric, "warning")
