"""The report's alert history, folded from the audit records the alerting service writes (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from spinewatch.domain.alerts.investigation import Investigation, Step, entry
from spinewatch.domain.alerts.model import Alert, Transition, audit_record
from spinewatch.domain.governance.history import alert_history, operator_resets

LABELS = {"site": "north", "metric": "complication_rate", "direction": "worse"}
ALERT = Alert("north.complication_rate.worse", "firing", "warning", LABELS, {}, "s1", "2025-03-01")
NOTE = "patient in bed 3"


def record(
    ident: str,
    transition: Transition,
    at: str,
    investigation: Investigation | None = None,
    step: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What `receivers.AuditReceiver` writes for one transition."""
    written = audit_record(replace(ALERT, investigation=investigation), transition)
    written |= {"id": ident, "at": at}
    return written | ({"step": step} if step is not None else {})


def step(kind: Step, at: str, by: str, **extra: Any) -> dict[str, Any]:
    return entry(kind, "inv-1", at=at, by=by, reason="free text: why", **extra)


def test_the_workflow_folds_deduplicated_and_without_free_text() -> None:
    opened = Investigation("inv-1", "fired", "2025-03-01T10:00:00Z")
    closed = replace(opened, status="closed", finding="case_mix_explained")
    at = [f"2025-03-0{d}T09:00:00Z" for d in range(1, 6)]
    records = [
        record("1", "firing", at[0], opened),
        record("1", "firing", at[0], opened),  # redelivered
        record("2", "acknowledged", at[1], replace(opened, status="acknowledged"),
               step("acknowledged", at[1], "ann")),
        record("3", "investigating", at[2], replace(opened, status="investigating"),
               step("investigating", at[2], "bob")),
        record("4", "closed", at[3], closed,
               step("closed", at[3], "ann", finding="case_mix_explained", note=NOTE)),
        record("5", "chart_reset", at[4], closed,
               step("chart_reset", at[4], "ann", effective_after="2025-03-04T12:00:00Z")),
        {"transition": "firing"},  # no fingerprint: says nothing
    ]  # fmt: skip
    (episode,) = alert_history(records)
    assert [t[0] for t in episode.transitions] == [
        "firing", "acknowledged", "investigating", "closed", "chart_reset",
    ]  # fmt: skip
    assert [t[2] for t in episode.transitions[1:]] == ["ann", "bob", "ann", "ann"]
    assert episode.investigation_status == "closed"
    assert episode.finding == "case_mix_explained"
    assert "bed" not in repr(episode)
    assert "free text" not in repr(episode)
    resets = operator_resets(records)
    # The chart restarts after the reset's effective instant, not the record's time.
    assert [r.on for r in resets[("north", "complication_rate", "worse")]] == [date(2025, 3, 4)]


def test_sites_and_period_filter_the_history() -> None:
    records = [record("1", "firing", "2025-03-01T10:00:00Z")]
    assert alert_history(records, sites=["south"]) == []
    assert alert_history(records, start=date(2025, 4, 1)) == []
    assert alert_history(records, end=date(2025, 2, 1)) == []
    assert len(alert_history(records, sites=["north"], start=date(2025, 3, 1))) == 1
