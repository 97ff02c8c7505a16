"""The report's alert history, folded from audit records of either release (pure)."""

from __future__ import annotations

from datetime import date
from typing import Any

from spinewatch.domain.governance.history import alert_history, operator_resets

LABELS = {"site": "north", "metric": "complication_rate", "direction": "worse"}


def record(ident: str, transition: str, at: str, **extra: Any) -> dict[str, Any]:
    return {"id": ident, "transition": transition, "at": at, "fingerprint": "north.c.worse",
            "severity": "warning", "labels": LABELS, **extra}  # fmt: skip


def test_the_workflow_folds_tolerantly_deduplicated_and_without_the_note() -> None:
    records = [
        record("1", "firing", "2025-03-01T10:00:00+00:00"),
        record("1", "firing", "2025-03-01T10:00:00+00:00"),  # redelivered
        record("2", "acknowledged", "2025-03-01T11:00:00+00:00", acknowledged_by="ann"),
        record(
            "3",
            "investigating",
            "2025-03-02T09:00:00+00:00",
            actor="bob",
            investigation_status="investigating",
        ),
        record(
            "4",
            "closed",
            "2025-03-09T09:00:00+00:00",
            actor="bob",
            investigation_status="closed",
            finding="case_mix_explained",
            note="patient 7 in bed 3",
        ),
        record("5", "chart_reset", "2025-03-09T09:01:00+00:00", reason="closed", reset_from=4.2),
        {"transition": "firing"},  # no fingerprint: says nothing
    ]
    (episode,) = alert_history(records)
    assert [t[0] for t in episode.transitions] == [
        "firing", "acknowledged", "investigating", "closed", "chart_reset",
    ]  # fmt: skip
    assert episode.transitions[1][2] == "ann"
    assert episode.investigation_status == "closed"
    assert episode.finding == "case_mix_explained"
    assert "bed" not in repr(episode)
    resets = operator_resets(records)
    assert [r.on for r in resets[("north", "complication_rate", "worse")]] == [date(2025, 3, 9)]


def test_sites_and_period_filter_the_history() -> None:
    records = [record("1", "firing", "2025-03-01T10:00:00Z")]
    assert alert_history(records, sites=["south"]) == []
    assert alert_history(records, start=date(2025, 4, 1)) == []
    assert alert_history(records, end=date(2025, 2, 1)) == []
    assert len(alert_history(records, sites=["north"], start=date(2025, 3, 1))) == 1
