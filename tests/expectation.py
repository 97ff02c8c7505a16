"""Expected cohort counts, computed directly from the distinct events.

Written independently of `spinewatch.domain` (plain dicts and loops over
the JSON the producers sent), so an end-to-end test compares the engine
with a second implementation rather than with itself.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

RELATED = {"definite", "probable", "possible"}

Cohort = tuple[str, str, str]  # site, procedure, indication
# (metric name, metric label, timepoint label) -> value
Expected = dict[Cohort, dict[tuple[str, str, str], int]]


def expected_counts(events: Iterable[dict[str, Any]]) -> Expected:
    distinct = {e["event_id"]: e for e in events}
    retracted = {
        e["target_event_id"] for e in distinct.values() if e["event_type"] == "event.retracted"
    }
    live = [e for e in distinct.values() if e["event_id"] not in retracted]
    by_procedure: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in live:
        by_procedure[event["procedure_id"]].append(event)

    expected: dict[Cohort, Counter[tuple[str, str, str]]] = defaultdict(Counter)
    for events_of_procedure in by_procedure.values():
        procedures = [e for e in events_of_procedure if e["event_type"] == "procedure.performed"]
        if not procedures:
            continue
        procedure = max(procedures, key=lambda e: (e["recorded_at"], e["event_id"]))
        cohort = (procedure["site_id"], procedure["procedure_type"], procedure["indication"])
        counts = expected[cohort]
        counts[("spinewatch_outcome_denominator", "complication_rate", "")] += 1

        assessed = [
            lv
            for lv in procedure["levels"]
            if lv.get("leakage_imaging") not in (None, "not_assessed")
        ]
        leaked = [lv for lv in assessed if lv.get("leakages")]
        key = ("cement_leakage_rate_per_level", "intra_procedure")
        counts[("spinewatch_outcome_denominator", *key)] += len(assessed)
        counts[("spinewatch_outcome_numerator", *key)] += len(leaked)

        categories = {
            e["category"]
            for e in events_of_procedure
            if e["event_type"] == "complication.reported" and e["relatedness"] in RELATED
        }
        if any(
            leak["symptomatic"] for lv in procedure["levels"] for leak in lv.get("leakages", [])
        ):
            categories.add("symptomatic_cement_leakage")
        counts[("spinewatch_outcome_numerator", "complication_rate", "")] += int(bool(categories))
        for category in (
            "radiculopathy",
            "death",
            "pulmonary_cement_embolism",
            "reoperation",
            "neurological_deficit",
        ):
            counts[("spinewatch_outcome_numerator", f"{category}_rate", "")] += int(
                category in categories
            )

        pre = procedure.get("pre_vas")
        if pre is not None:
            counts[("spinewatch_vas_patients", "vas_score", "pre_procedure")] += 1
        finals = [
            e for e in events_of_procedure
            if e["event_type"] == "followup.recorded" and e["timepoint"] == "final"
        ]  # fmt: skip
        if finals:
            final = max(finals, key=lambda e: (e["recorded_at"], e["event_id"]))
            if final.get("vas") is not None and pre:
                counts[("spinewatch_outcome_denominator", "responder_rate", "final")] += 1
                responded = pre - final["vas"] >= 0.5 * pre
                counts[("spinewatch_outcome_numerator", "responder_rate", "final")] += int(
                    responded
                )
    return {cohort: dict(counts) for cohort, counts in expected.items()}


def observed_counts(samples: dict[Any, float], expected: Expected) -> Expected:
    """The same numbers read from a /metrics scrape (site cohorts, all operators)."""
    observed: Expected = {}
    for (site, procedure, indication), counts in expected.items():
        observed[(site, procedure, indication)] = {
            (name, metric, timepoint): int(
                samples.get(
                    (
                        name,
                        frozenset(
                            {
                                "site": site,
                                "procedure": procedure,
                                "indication": indication,
                                "operator": "all",
                                "metric": metric,
                                "timepoint": timepoint,
                            }.items()
                        ),
                    ),
                    0,
                )
            )
            for (name, metric, timepoint) in counts
        }
    return observed
