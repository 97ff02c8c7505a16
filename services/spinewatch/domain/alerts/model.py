"""Alerts as on-call staff see them: pure functions from drift messages to payloads.

An alert is one episode of one chart: (site, metric, direction). It fires
on the first `drift.signalled` of an episode, stays one alert while the
chart keeps signalling (a persisting shift signals again every ~ARL1
cases: no new page), and resolves on the `drift.in_control` that names the
episode's latest signal (the engine sends it after
`drift_resolve_after_cases` cases without a new signal). A signal after the
resolution starts a new episode.

What each receiver gets is built here, with no I/O:
- Alertmanager API v2: labels (alertname, severity, site, procedure,
  indication, metric, direction) and annotations (summary, observed vs
  baseline, the seed citation, the change point, the dashboard link);
  `endsAt` in the past resolves it.
- A JSON webhook: Slack-compatible `text` plus the structured alert.
- The audit topic: one record per transition.
No patient or procedure identifier exists at this level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from spinewatch.contracts.control import FINDINGS
from spinewatch.contracts.drift import DriftSentinel, DriftSentinelWithdrawn, DriftSignalled
from spinewatch.domain.alerts.investigation import Investigation
from spinewatch.domain.alerts.policy import SENTINEL_SEED_FIGURES, Severity, severity_of

ALERT_NAME = "SpinewatchDriftSignal"
SENTINEL_ALERT_NAME = "SpinewatchSentinelEvent"
# A sentinel alert is one event, not a state: Alertmanager holds it this
# long (no re-sends), on-call staff acknowledge it.
SENTINEL_ACTIVE = timedelta(hours=24)
# The paging transitions, then the investigation's steps after the firing
# (domain/alerts/investigation.py; "acknowledged" is both).
Transition = Literal[
    "firing", "resolved", "acknowledged", "withdrawn", "investigating", "closed", "chart_reset"
]


def fingerprint(site_id: str, metric: str, direction: str) -> str:
    """The alert's identity: one per chart, across episodes."""
    return f"{site_id}.{metric}.{direction}"


@dataclass(frozen=True, slots=True)
class Alert:
    """The state of one chart's alert, as held in Redis."""

    fingerprint: str
    status: Literal["firing", "resolved"]
    severity: Severity
    labels: dict[str, str]
    annotations: dict[str, str]
    signal_id: str  # the episode's latest signal
    starts_at: str  # RFC 3339
    ends_at: str | None = None
    acknowledged_by: str | None = None
    # Drift alerts: the episode's onset as a sortable key (change point date,
    # case number). Later signals of the episode keep the earliest onset.
    onset: str | None = None
    # Sentinel alerts: why the page was withdrawn (its cause is gone).
    withdrawn_reason: str | None = None
    # The current investigation (status, who moved it last, finding): no free text.
    investigation: Investigation | None = None


def has_chart(alert: Alert) -> bool:
    """Drift alerts have a chart (a reset restarts it); sentinel and silence alerts do not."""
    return alert.labels.get("alertname") == ALERT_NAME


def alert_from_signal(
    signal: DriftSignalled, now: datetime, dashboard_url: str, starts_at: str | None = None
) -> Alert:
    severity = severity_of(signal.metric)
    main = max(signal.baselines, key=lambda b: b.cases, default=None)
    labels = {
        "alertname": ALERT_NAME,
        "severity": severity,
        "site": signal.site_id,
        # The chart weighs every stratum of the site; the label names the one
        # with the most cases since the change point.
        "procedure": main.procedure_type.value if main else "mixed",
        "indication": main.indication.value if main else "mixed",
        "metric": signal.metric,
        "direction": signal.direction,
    }
    return Alert(
        fingerprint=fingerprint(signal.site_id, signal.metric, signal.direction),
        status="firing",
        severity=severity,
        labels=labels,
        annotations=_annotations(signal, dashboard_url),
        signal_id=str(signal.signal_id),
        starts_at=starts_at or rfc3339(now),
        onset=f"{signal.change_point_on.isoformat()}|{signal.change_point_case_number:09d}",
    )


def _annotations(signal: DriftSignalled, dashboard_url: str) -> dict[str, str]:
    target = signal.local_target
    if target is not None and signal.observed_events is not None:
        observed = (
            f"{signal.observed_events} missed vs {signal.expected_events or 0:.1f} expected "
            f"over the last {signal.cases_since_change} scheduled cases"
        )
    elif signal.observed_events is not None and signal.expected_events is not None:
        observed = (
            f"{signal.observed_events} adverse outcomes vs {signal.expected_events:.1f} "
            f"expected over the last {signal.cases_since_change} cases"
        )
    else:
        observed = (
            f"mean VAS change {signal.observed_mean_change or 0:+.1f} vs "
            f"{signal.expected_mean_change or 0:+.1f} published over the last "
            f"{signal.cases_since_change} patients"
        )
        if signal.holds_under_pessimistic is not None:
            verdict = "holds" if signal.holds_under_pessimistic else "does not hold"
            observed += (
                f"; with lost follow-ups as no relief {signal.pessimistic_mean_change or 0:+.1f}"
                f" ({verdict})"
            )
    citations = "; ".join(
        f"{b.baseline_id} ({b.described}; seed {b.seed}, {b.locator}): {b.cases} cases"
        for b in sorted(signal.baselines, key=lambda b: -b.cases)
    )
    if target is not None:
        citations = (
            f"local target {target.setting}={target.expected:g} ({target.described}); "
            "no literature figure"
        )
    return {
        "summary": f"{signal.site_id}: {signal.metric} drifted ({signal.direction})",
        "observed_vs_baseline": observed,
        "citation": citations,
        # The episode's first signal's; the alerting store keeps it while later
        # signals of the episode update `latest_signal` (no new page).
        "change_point": (
            f"estimated start {signal.change_point_on} (case {signal.change_point_case_number}); "
            f"signalled {signal.signalled_on} (case {signal.case_number}), "
            f"CUSUM {signal.statistic:.2f} >= h {signal.limit:.2f}"
        ),
        "latest_signal": (
            f"signalled {signal.signalled_on} (case {signal.case_number}), "
            f"CUSUM {signal.statistic:.2f} >= h {signal.limit:.2f}; this signal's estimated "
            f"start {signal.change_point_on} (case {signal.change_point_case_number})"
        ),
        "signals_in_episode": "1",
        "dashboard": (
            f"{dashboard_url.rstrip('/')}?var-site={signal.site_id}&var-metric={signal.metric}"
        ),
    }


def alert_from_sentinel(sentinel: DriftSentinel, now: datetime, dashboard_url: str) -> Alert:
    """Critical at the first case: a catastrophic event, whatever its published rate."""
    labels = {
        "alertname": SENTINEL_ALERT_NAME,
        "severity": severity_of(sentinel.metric),
        "site": sentinel.site_id,
        "procedure": sentinel.procedure_type.value,
        "indication": sentinel.indication.value,
        "metric": sentinel.metric,
        # Alertmanager merges alerts with equal labels; every sentinel event
        # pages on its own, so its (hashed, non-identifying) id is a label.
        "sentinel_id": str(sentinel.sentinel_id),
    }
    what = sentinel.metric.removesuffix("_rate").replace("_", " ")
    cohort = f"{sentinel.procedure_type.value} / {sentinel.indication.value}"
    annotations = {
        "summary": f"{sentinel.site_id}: {what} after {cohort} ({sentinel.occurred_on})",
        "observed_vs_baseline": (
            f"1 new case; {SENTINEL_SEED_FIGURES.get(sentinel.metric, 'a sentinel event')}"
        ),
        "citation": (
            "sentinel rule: every procedure-related case is reviewed (domain/alerts/policy.py)"
        ),
        "change_point": f"procedure of {sentinel.occurred_on}",
        "dashboard": (
            f"{dashboard_url.rstrip('/')}?var-site={sentinel.site_id}&var-metric={sentinel.metric}"
        ),
    }
    return Alert(
        fingerprint=f"sentinel.{sentinel.sentinel_id}",
        status="firing",
        severity=severity_of(sentinel.metric),
        labels=labels,
        annotations=annotations,
        signal_id=str(sentinel.sentinel_id),
        starts_at=rfc3339(now),
        ends_at=rfc3339(now + SENTINEL_ACTIVE),
    )


def resolved(alert: Alert, now: datetime) -> Alert:
    return replace(alert, status="resolved", ends_at=rfc3339(now))


WITHDRAWAL_REASONS = {
    "retracted": "the complication report was retracted",
    "procedure_voided": "the procedure was voided (every version retracted)",
    "procedure_corrected": "a correction moved the procedure to another site",
}


def withdrawal_note(message: DriftSentinelWithdrawn) -> str:
    """The annotation a withdrawn sentinel alert carries: why, for every receiver."""
    return f"withdrawn: {WITHDRAWAL_REASONS[message.reason]}; the case no longer counts"


def withdrawn(alert: Alert, message: DriftSentinelWithdrawn, now: datetime) -> Alert:
    """A sentinel alert whose cause is gone: resolved now, with the reason."""
    annotations = alert.annotations | {"withdrawn": withdrawal_note(message)}
    return replace(
        alert,
        status="resolved",
        ends_at=rfc3339(now),
        annotations=annotations,
        withdrawn_reason=message.reason,
    )


def alertmanager_payload(alert: Alert, now: datetime, resend_interval_s: float) -> dict[str, Any]:
    """One alert for `POST /api/v2/alerts`.

    A firing alert carries an `endsAt` a few re-send intervals ahead, so it
    expires by itself if every alerting process is gone, instead of firing
    forever; the re-sends keep pushing it forward.
    """
    ends_at = alert.ends_at or rfc3339(now + timedelta(seconds=4 * resend_interval_s))
    return {
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": alert.starts_at,
        "endsAt": ends_at,
        "generatorURL": alert.annotations.get("dashboard", ""),
    }


_MARKS: dict[Transition, str] = {
    "firing": "FIRING",
    "resolved": "RESOLVED",
    "acknowledged": "ACKNOWLEDGED",
    "withdrawn": "WITHDRAWN",
    "investigating": "INVESTIGATING",
    "closed": "CLOSED",
    "chart_reset": "CHART RESET",
}


def webhook_payload(
    alert: Alert, transition: Transition, step: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Slack-compatible `text`, with the structured alert beside it.

    An investigation's step (`step`, its history record) gives who and the
    finding's label from the fixed list; never its reason or note (free
    text stays off chat channels: they are logged and searched widely).
    """
    mark = _MARKS[transition]
    text = f"[{mark}] [{alert.severity}] {alert.annotations['summary']}"
    if transition == "withdrawn":
        text += f"\n{alert.annotations.get('withdrawn', 'withdrawn')}"
    if transition == "firing":
        text += (
            f"\n{alert.annotations['observed_vs_baseline']}\n{alert.annotations['change_point']}"
            f"\nBaseline: {alert.annotations['citation']}\n{alert.annotations['dashboard']}"
        )
    elif step is not None:
        text += f" (by {step.get('by')})"
        if transition == "closed":
            text += f": {FINDINGS.get(str(step.get('finding')), 'finding recorded')}"
        elif transition == "chart_reset":
            text += f": the chart restarts after {step.get('effective_after')}"
    elif transition == "acknowledged":
        text += f" (by {alert.acknowledged_by})"
    return {"text": text, "transition": transition, "alert": audit_record(alert, transition)}


def audit_record(alert: Alert, transition: Transition) -> dict[str, Any]:
    return {
        "transition": transition,
        "fingerprint": alert.fingerprint,
        "status": alert.status,
        "severity": alert.severity,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "signal_id": alert.signal_id,
        "starts_at": alert.starts_at,
        "ends_at": alert.ends_at,
        "acknowledged_by": alert.acknowledged_by,
        "withdrawn_reason": alert.withdrawn_reason,
        "investigation": None if alert.investigation is None else asdict(alert.investigation),
    }


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
